"""One exception type for every user-facing mistake (bad model name, bad data, bad option).

The command line prints its message without a traceback and exits with status 2.
"""


class FreezelabError(Exception):
    """A problem with the user's input that the message explains and says how to fix."""
