"""What a run directory records about how it was made: git commit, command lines, results.json."""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ssmbench.config import PACKAGE_DIR
from ssmbench.errors import RunFailed, UserError
from ssmbench.interrupts import RunInterrupted

log = logging.getLogger(__name__)


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
    """Write results.json atomically (a reader never sees half a file; concurrent writers never share a
    temporary file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(jsonable(results), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_results(path: Path) -> dict:
    """The results.json at `path` ({} when there is none or it cannot be read)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


class RunRecord:
    """A run's results.json, kept true while the run lives.

    It records who runs it (`pid`, `host`) and a `heartbeat` (time.time()) that a background thread
    renews every `heartbeat_interval_s` seconds, so `ssmbench compare` can tell a run that is still
    going from one whose process died without a word (SIGKILL, out-of-memory kill, power loss).
    `wall_time_s` counts from `claim()`, plus `wall_time_before_s` (the earlier segments of a resumed run).
    Every write replaces the whole file atomically, under a lock shared with the heartbeat thread.
    """

    def __init__(self, path: Path, results: dict, heartbeat_interval_s: float = 30.0, wall_time_before_s: float = 0.0):
        self.path = Path(path)
        self.results = dict(results)
        self.interval = heartbeat_interval_s
        self.wall_time_before_s = wall_time_before_s
        self._started = time.time()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def claim(self, exclusive: bool) -> None:
        """Create results.json and start the heartbeat; with `exclusive`, fail (FileExistsError) if the
        directory already holds a run's."""
        if exclusive:
            os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        self._started = time.time()
        self.update(pid=os.getpid(), host=socket.gethostname(), heartbeat_interval_s=self.interval)
        self._thread = threading.Thread(target=self._beat, name="ssmbench-heartbeat", daemon=True)
        self._thread.start()

    def update(self, **fields) -> None:
        """Merge `fields` into the record and write it, with a fresh heartbeat and wall time."""
        with self._lock:
            self.results.update(fields)
            self.results["heartbeat"] = time.time()
            self.results["wall_time_s"] = self.wall_time_before_s + self.results["heartbeat"] - self._started
            write_results(self.path, self.results)

    def _beat(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                self.update()
            except OSError as e:  # a full disk or a stale network mount: try again at the next beat
                log.warning("could not renew the heartbeat in %s: %s", self.path, e)

    def close(self) -> None:
        """Stop the heartbeat (the last write stays as it is)."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()


def outcome(e: BaseException) -> dict:
    """What results.json records of a run that exception `e` ended: its status and error."""
    if isinstance(e, RunInterrupted):
        return {"status": e.status, "error": str(e)}
    if isinstance(e, (UserError, RunFailed)):
        return {"status": "failed", "error": str(e)}
    return {"status": "failed", "error": f"{type(e).__name__}: {e}"}


@contextmanager
def recorded(record: RunRecord | None) -> Iterator[RunRecord | None]:
    """Around a claimed run: an exception out of the block is recorded (`outcome`) and raised on; the
    heartbeat stops when the block ends. With None (a DDP rank other than zero) nothing is recorded."""
    try:
        yield record
    except BaseException as e:
        if record is not None:
            record.update(**outcome(e))
        raise
    finally:
        if record is not None:
            record.close()
