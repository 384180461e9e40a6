"""Optuna studies kept in SQLite inside a sweep directory: where `sweep=lr_wd` stores its study, and how
`ssmbench dashboard` finds such studies to print the `optuna-dashboard` command that shows them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

STUDY_FILE = "optuna.db"
SQLITE_MAGIC = b"SQLite format 3\x00"


def sqlite_storage(directory: str) -> str:
    """The SQLite URL of the study file in `directory` (conf/sweep/lr_wd.yaml: the sweep directory), which is
    created first: the sweeper opens the study before the launcher creates the sweep directory."""
    path = Path(directory).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / STUDY_FILE}"


def is_optuna_study(path: Path) -> bool:
    """Whether `path` is an SQLite file holding Optuna's `studies` table (read only, nothing is created)."""
    try:
        with path.open("rb") as f:
            if f.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
                return False
        with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as db:
            return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='studies'").fetchone() is not None
    except (OSError, sqlite3.Error):
        return False


def find_studies(directories: list[Path]) -> list[Path]:
    """The Optuna SQLite studies (*.db) directly in each of `directories` (sweep directories), each once."""
    found = {}
    for directory in directories:
        for path in sorted(directory.glob("*.db")):
            if is_optuna_study(path):
                found.setdefault(path.resolve(), None)
    return list(found)


def dashboard_command(study: Path) -> str:
    """The command that serves `study` in optuna-dashboard (`pip install ssmbench[dashboard]`)."""
    return f"optuna-dashboard sqlite:///{study.resolve()}"
