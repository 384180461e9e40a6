"""Small data files, in each task's real format, for the tasks that read files (no network in tests).

`FIXTURES[task_name](data_dir)` writes the files the task's datamodule looks for under `data_dir`.
Generated tasks (copy, ...) need none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

FIXTURES: dict[str, Callable[[Path], None]] = {}
