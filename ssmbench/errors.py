"""User-facing errors: each ends the command with one clear line and a non-zero exit, no traceback."""


class UserError(Exception):
    """A mistake the user can fix (bad option, missing file, incompatible model and task).

    The message is one sentence that names the bad value and says what to do.
    """
