"""Errors that end a command with one clear line and a non-zero exit, no traceback (see `fail` below).

This module imports nothing from ssmbench, so every layer (cli.py, data_cli.py, ...) may import it.
"""

from __future__ import annotations

import os
import sys


def verbose() -> bool:
    """Tracebacks wanted: `--verbose` on the command line, or Hydra's HYDRA_FULL_ERROR=1."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def fail(message: str, code: int = 2) -> None:
    """Print `error: message` (one line; the traceback too when verbose()) to stderr and exit."""
    import traceback

    from rich.console import Console
    from rich.text import Text

    if verbose() and sys.exc_info()[0] is not None:
        traceback.print_exc()
    Console(stderr=True, soft_wrap=True).print(Text.assemble(("error: ", "bold red"), message))
    raise SystemExit(code)


class UserError(Exception):
    """A mistake the user can fix (bad option, missing file, incompatible model and task).

    The message is one sentence that names the bad value and says what to do.
    """


class RunFailed(Exception):
    """A run that cannot go on for a reason of its own (not a user mistake, not a bug in ssmbench):
    reported in one line, recorded in results.json as `failed` with this message, exit code 1."""


class NonFiniteError(RunFailed):
    """A non-finite loss or gradient; the message names the step and which it was."""


class TaskDataError(UserError):
    """Task data that is missing, corrupt or inconsistent with the task's metadata.

    The message names the file or split and says how to obtain or fix it.
    """
