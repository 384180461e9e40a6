"""Where task data lives on disk, the cache of processed tensors, and the errors for missing or bad files.

Layout under `data_dir` (`paths.data_dir`: `$SSMBENCH_DATA`, else `./data`):

    <data_dir>/mnist/, cifar10/, imdb/     Hugging Face parquet files (`ssmbench data prepare <task>`)
    <data_dir>/lra_release/...             the Long Range Arena release (or `ssmbench data generate ...`)
    <data_dir>/cache/<name>-<digest>.pt    processed tensors, one file per distinct key (name: the dataset,
                                           so e.g. smnist and psmnist share one cache of MNIST pixels)

A cache file is named by a digest of its key: every setting that changes the processed tensors
(dataset, grayscale, resolution, sequence length, ...) plus the size and modification time of
each source file and CACHE_FORMAT. A different setting or a changed source file therefore gives
a different file name and is never served a stale cache. The key is also stored inside the file
and compared on load; an unreadable or mismatched cache file is rebuilt, never trusted.

Every file (and generated directory) is written under a temporary name beside its target and renamed
into place when complete (`atomic_path`, `atomic_directory`), so a reader, a concurrent writer or a
killed writer never leaves or sees half a file, or a directory mixing two writers' files.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

import torch

from ssmbench.errors import TaskDataError

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
T = TypeVar("T")


def resolve_data_dir(data_dir: str | Path) -> Path:
    """`data_dir` as an absolute path (`~` expanded); it need not exist yet."""
    return Path(data_dir).expanduser().resolve()


def missing_data(task: str, looked_for: Iterable[str | Path], remedy: str) -> TaskDataError:
    """The one-line error for data that is not on disk: what was looked for, and how to get it."""
    where = ", ".join(str(p) for p in looked_for)
    return TaskDataError(f"task {task}: data not found (looked for {where}); {remedy}")


def corrupt_file(path: str | Path, problem: str,
                 remedy: str = "delete it and fetch or generate it again") -> TaskDataError:
    """The one-line error for a truncated, corrupt or malformed data file, naming the file."""
    return TaskDataError(f"{path}: {problem}; {remedy}")


def _temporary_name(path: Path, suffix: str) -> Path:
    """A hidden sibling of `path` that no other process or thread uses: .<name>.<pid>.<thread>.<suffix>."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.{suffix}")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary file name beside `path` to write to; when the block ends without error the file replaces
    `path` (os.replace: a reader sees the old file or the complete new one). On error it is removed."""
    tmp = _temporary_name(path, "tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _move_in(tmp: Path, path: Path) -> None:
    """Rename directory `tmp` to `path`; a directory already at `path` (another writer's) is moved aside and deleted."""
    while True:
        try:
            os.rename(tmp, path)  # fails while a non-empty directory sits at `path`
            return
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        old = _temporary_name(path, "old")
        try:
            os.rename(path, old)
        except FileNotFoundError:  # another writer moved it aside first
            continue
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """A new temporary directory beside `path` to fill; when the block ends without error it takes the place of
    `path` (replacing a directory there), so `path` is never half-written nor a mix of two writers' files. On
    error it is removed and `path` is left as it was."""
    tmp = _temporary_name(path, "tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.mkdir()
    try:
        yield tmp
        _move_in(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fingerprint(files: Iterable[Path], root: Path) -> list[list]:
    """[[path relative to root, size in bytes, modification time in ns], ...] of `files`, sorted by path."""
    rows = []
    for f in files:
        st = f.stat()
        rows.append([f.relative_to(root).as_posix() if f.is_relative_to(root) else str(f), st.st_size, st.st_mtime_ns])
    return sorted(rows)


def size_on_disk(paths: Iterable[Path]) -> int:
    """Total size in bytes of the files under `paths` (files or directories; missing ones count 0)."""
    total = 0
    for p in paths:
        if p.is_file():
            total += p.stat().st_size
        elif p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return total


def human_size(n_bytes: int) -> str:
    size = float(n_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def cache_files(data_dir: Path, name: str) -> list[Path]:
    """Every cache file named `name` under `<data_dir>/cache/` (one per distinct key)."""
    return sorted((Path(data_dir) / "cache").glob(f"{name}-*.pt"))


class TensorCache:
    """Processed tensors of one dataset under `<data_dir>/cache/<name>-<digest of key>.pt`."""

    def __init__(self, data_dir: Path, name: str, key: dict):
        self.key = {"cache_format": CACHE_FORMAT, "name": name, **key}
        digest = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()[:16]
        self.path = Path(data_dir) / "cache" / f"{name}-{digest}.pt"

    def exists(self) -> bool:
        return self.path.is_file()

    def load(self) -> dict[str, torch.Tensor] | None:
        """The cached tensors (memory-mapped from the file, so a large cache opens at once), or None if
        there is no usable cache file (missing, unreadable, written for another key)."""
        if not self.path.is_file():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:  # a truncated or foreign file: rebuild it
            log.warning("cache %s is unreadable (%s: %s); rebuilding it", self.path, type(e).__name__, e)
            return None
        if not isinstance(saved, dict) or saved.get("key") != self.key:
            log.warning("cache %s was written for other settings; rebuilding it", self.path)
            return None
        return saved["tensors"]

    def save(self, tensors: dict[str, torch.Tensor]) -> None:
        """Write atomically (`atomic_path`), so readers never see half a cache file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            torch.save({"key": self.key, "tensors": tensors}, tmp)

    def get(self, build: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The cached tensors; on a miss, `build()` them, save them and return them."""
        tensors = self.load()
        if tensors is None:
            tensors = build()
            self.save(tensors)
            log.info("cached processed data in %s", self.path)
        return tensors


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate over `items` with a rich progress bar (count, rate, time left) on stderr."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        yield from bar.track(items, total=total, description=description)
