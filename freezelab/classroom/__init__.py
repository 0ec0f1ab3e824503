"""The classroom: graders for the assignment notebooks and the grading command.

- `freezelab.classroom.checks`: one ``check_*`` function per graded exercise (students call them in
  their notebooks for feedback while they work);
- `freezelab.classroom.grade`: ``freezelab grade NOTEBOOK.ipynb [--json PATH]`` executes a submitted
  notebook and runs every check of its assignment, whatever fails, into a score table and JSON.

The assignments themselves are ``notebooks/assignments/`` (student versions) and
``notebooks/assignments/solutions/`` (instructors).
"""
