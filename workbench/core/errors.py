"""Errors that reach the user as one line (exit code 2), never as a traceback."""


class UserError(Exception):
    """A mistake in the user's input: bad flag, file, field, run id or model path.

    The message is shown as is, on one line; it must name the file, line or field at fault.
    """

    exit_code = 2
