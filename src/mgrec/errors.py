"""The one exception type for mistakes a user can fix.

The CLI prints a ``UserError`` as a single line and exits non-zero; anything else is a bug
and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input (data, config, arguments) with a message saying what to do."""
