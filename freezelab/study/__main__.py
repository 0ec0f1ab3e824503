"""`python -m freezelab.study`: run or collect the oracle study (`freezelab.study.runner`)."""

from freezelab.study.runner import main

main()
