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
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

import torch

from ssmbench.data.base import TaskDataError

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
        """Write atomically (temporary file, then rename), so readers never see half a cache file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        torch.save({"key": self.key, "tensors": tensors}, tmp)
        os.replace(tmp, self.path)

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
