"""What a run directory records about how it was made: git commit, command lines, results.json."""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path

from ssmbench.config import PACKAGE_DIR


def git_commit() -> dict:
    """The commit of the ssmbench source tree and whether it had uncommitted changes (None outside git)."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=PACKAGE_DIR, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None
    return {"git_commit": commit, "git_dirty": dirty}


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed (program name shortened to `ssmbench`)."""
    argv = sys.argv if argv is None else argv
    return shlex.join(["ssmbench", *argv[1:]])


def jsonable(value):
    """`value` with tensors and numpy scalars as Python numbers and non-finite floats as None (valid JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item"):
        return jsonable(value.item())
    return value


def write_results(path: Path, results: dict) -> None:
    """Write results.json atomically (a reader never sees half a file)."""
    path = Path(path)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(jsonable(results), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
