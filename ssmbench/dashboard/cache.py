"""The TensorBoard log directory of a selection of runs: one folder per run, one event file in it holding the
HParams experiment, the run's session and its curves (ssmbench/dashboard/events.py, hparams.py).

It lives in the user's cache ($XDG_CACHE_HOME/ssmbench/dashboard/<key of the selected paths>), never in the
run directories: the hparams depend on which runs are selected together. `sync` brings it up to date with
the runs on disk: a run whose files (results.json, metrics.csv, TensorBoard events), status or hparams
changed gets a new event file; a run that is gone loses its folder; state.json remembers what each folder
was written from, so an unchanged run is not rewritten, in this process or the next.

TensorBoard keeps the first summary metadata it reads for a tag, and the hparams live in that metadata; a
rewritten run must therefore be loaded afresh. `sync` deletes the folders it replaces and reports them, and
the server drops those runs from its loader (a reload of a deleted folder forgets it) before they return.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable

from ssmbench.compare.runs import Run
from ssmbench.dashboard.events import run_events, tensorboard_files, write_event_file
from ssmbench.dashboard.hparams import hparams_of, session_start

STATE_FILE = "state.json"


def cache_root() -> Path:
    """$XDG_CACHE_HOME/ssmbench/dashboard (default ~/.cache/ssmbench/dashboard)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ssmbench" / "dashboard"


def logdir_for(paths: list[str]) -> Path:
    """The log directory of the selection `paths` (the same paths in any order share it)."""
    key = "\n".join(sorted(str(Path(p).resolve()) for p in paths))
    return cache_root() / hashlib.sha256(key.encode()).hexdigest()[:16]


def _stat(path: Path) -> list:
    info = path.stat()
    return [str(path), info.st_mtime_ns, info.st_size]


def fingerprint(run: Run, experiment: bytes, values: dict) -> str:
    """What the run's event file is written from: its files' paths, times and sizes, its status and hparams,
    and the experiment (the columns shared by all runs)."""
    sources = [run.path / "results.json", run.path / "csv" / "metrics.csv", *tensorboard_files(run)]
    record = [[_stat(p) for p in sources if p.is_file()], run.status, sorted(values.items()), experiment.hex()]
    return hashlib.sha256(json.dumps(record, default=str).encode()).hexdigest()


def _read_state(logdir: Path) -> dict:
    try:
        return json.loads((logdir / STATE_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _write_state(logdir: Path, state: dict) -> None:
    partial = logdir / f"{STATE_FILE}.tmp"
    partial.write_text(json.dumps(state, indent=1, sort_keys=True))
    os.replace(partial, logdir / STATE_FILE)


def _remove_strays(logdir: Path, state: dict) -> None:
    """Delete what no recorded run owns (a folder of an interrupted write, a state.json that was lost)."""
    owners = {name.split("/")[0] for name in state}
    for entry in logdir.iterdir():
        if entry.name not in owners and entry.name != STATE_FILE:
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def sync(logdir: Path, runs: list[Run], forget: Callable[[list[str]], None] = lambda names: None) -> list[str]:
    """Bring `logdir` up to date with `runs`: delete the folders of runs that are gone or changed, call
    `forget` with their names (the server drops them from its loader), then write the event file of every run
    that has none. Returns the names of the runs deleted or written, sorted."""
    logdir.mkdir(parents=True, exist_ok=True)
    hparams = hparams_of(runs) if runs else None
    experiment = hparams.experiment.SerializeToString() if hparams else b""
    wanted = {r.name: fingerprint(r, experiment, hparams.values[r.name]) for r in runs}
    state = _read_state(logdir)
    stale = [name for name, fp in state.items() if wanted.get(name) != fp or not (logdir / name).is_dir()]
    for name in stale:
        shutil.rmtree(logdir / name, ignore_errors=True)
        del state[name]
    _remove_strays(logdir, state)
    _write_state(logdir, state)
    if stale:
        forget(stale)
    todo = [r for r in runs if r.name not in state]
    for run in todo:
        events = run_events(run)
        wall_time = max((e.wall_time for e in events), default=run.updated)
        write_event_file(logdir / run.name, [hparams.experiment, session_start(run.name, hparams.values[run.name])],
                         events, wall_time)
        state[run.name] = wanted[run.name]
    _write_state(logdir, state)
    return sorted({*stale, *(r.name for r in todo)})
