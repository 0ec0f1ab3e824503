"""`python -m freezelab.study`: run or collect the oracle study (`freezelab.study.runner`)."""

import sys

from freezelab.errors import FreezelabError
from freezelab.study.runner import main

try:
    main()
except FreezelabError as e:  # as the command line: the message without a traceback, status 2
    print(f"python -m freezelab.study: error: {e}", file=sys.stderr)
    sys.exit(2)
