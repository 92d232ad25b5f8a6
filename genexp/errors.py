"""The one exception type that means "the user asked for something that cannot be done".

The CLI turns it into a single line on stderr and exit code 2. Anything else that
escapes is a bug in genexp and is allowed to traceback.
"""


class UserError(Exception):
    """A mistake in the command line, a config, a file or a path: fixable by the user."""
