"""Errors that end a command with one clear line and a non-zero exit, no traceback (see ssmbench.cli.fail)."""


class UserError(Exception):
    """A mistake the user can fix (bad option, missing file, incompatible model and task).

    The message is one sentence that names the bad value and says what to do.
    """


class RunFailed(Exception):
    """A run that cannot go on for a reason of its own (not a user mistake, not a bug in ssmbench):
    reported in one line, recorded in results.json as `failed` with this message, exit code 1."""


class NonFiniteError(RunFailed):
    """A non-finite loss or gradient; the message names the step and which it was."""
