"""Hugging Face hub datasets as local parquet files: download once, then read without the hub.

A dataset lives in `<data_dir>/<name>/` as parquet files in the hub's own schema (an image column
is a struct {bytes: PNG/JPEG bytes, path}). A split is every file named `<split>.parquet` or
`<split>-*.parquet` (the hub's `train-00000-of-00001.parquet`) anywhere below that directory, so
both `ssmbench data prepare <task>` (which writes `<split>.parquet`) and a copy of the hub
repository's parquet files (`huggingface-cli download <id> --repo-type dataset --local-dir ...`) work.
`HubTask` is the FileTask of the tasks that read such a dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ssmbench.data.base import DataStatus
from ssmbench.data.files import FileTask
from ssmbench.data.storage import atomic_path, corrupt_file, missing_data


@dataclass(frozen=True)
class HubDataset:
    """A dataset of the Hugging Face hub: its id, its local directory name and the splits used."""

    hub_id: str
    name: str
    splits: tuple[str, ...] = ("train", "test")

    def local_dir(self, data_dir: Path) -> Path:
        return data_dir / self.name

    def split_files(self, data_dir: Path, split: str) -> list[Path]:
        """The parquet files of `split` below `local_dir`, sorted (empty if there are none)."""
        root = self.local_dir(data_dir)
        if not root.is_dir():
            return []
        return sorted(p for p in root.rglob("*.parquet")
                      if p.name == f"{split}.parquet" or p.name.startswith(f"{split}-"))

    def source_files(self, data_dir: Path) -> list[Path]:
        return [f for split in self.splits for f in self.split_files(data_dir, split)]

    def is_present(self, data_dir: Path) -> bool:
        return all(self.split_files(data_dir, split) for split in self.splits)

    def looked_for(self, data_dir: Path) -> list[str]:
        root = self.local_dir(data_dir)
        return [f"{root}/**/{split}{{.parquet,-*.parquet}}" for split in self.splits]


def download(dataset: HubDataset, data_dir: Path, task: str, **load_kwargs) -> None:
    """`datasets.load_dataset(hub_id)` and write each split to `<data_dir>/<name>/<split>.parquet`.

    `load_kwargs` go to `load_dataset` (e.g. a revision). Each file is written atomically (`atomic_path`).
    Raises TaskDataError when the hub cannot be reached, naming the directory the parquet files can be
    copied into instead.
    """
    import datasets

    out = dataset.local_dir(data_dir)
    try:
        loaded = datasets.load_dataset(dataset.hub_id, **load_kwargs)
    except Exception as e:  # no network, hub down, unknown revision, ...
        reason = f"{type(e).__name__}: {e}".splitlines()[0]
        raise missing_data(
            task, dataset.looked_for(data_dir),
            f"downloading {dataset.hub_id} from the Hugging Face hub failed ({reason}); run "
            f"`ssmbench data prepare {task} --data-dir {data_dir}` where the hub is reachable, or copy the parquet "
            f"files of https://huggingface.co/datasets/{dataset.hub_id} into {out}",
        ) from e
    out.mkdir(parents=True, exist_ok=True)
    for split in dataset.splits:
        with atomic_path(out / f"{split}.parquet") as tmp:
            loaded[split].to_parquet(str(tmp))


def ensure_local(dataset: HubDataset, data_dir: Path, task: str, download_missing: bool) -> None:
    """Make sure every split is on disk: download it when allowed, else raise TaskDataError saying how."""
    if dataset.is_present(data_dir):
        return
    if download_missing:
        download(dataset, data_dir, task)
        return
    raise missing_data(
        task, dataset.looked_for(data_dir),
        f"run `ssmbench data prepare {task} --data-dir {data_dir}` (downloads {dataset.hub_id}), or copy the parquet "
        f"files of https://huggingface.co/datasets/{dataset.hub_id} into {dataset.local_dir(data_dir)}",
    )


class HubTask(FileTask):
    """A FileTask that reads the parquet files of the hub dataset `self.hub` (set by the task's constructor),
    downloading them first when `self.download` allows; its cache is named after the dataset."""

    hub: HubDataset
    download: bool = True

    @property
    def cache_name(self) -> str:
        return self.hub.name

    def _find_files(self) -> list[Path]:
        ensure_local(self.hub, self.root, self.name, self.download)
        return self.hub.source_files(self.root)

    def data_status(self) -> DataStatus:
        return self._status(f"Hugging Face {self.hub.hub_id}", self.hub.is_present(self.root),
                            self.hub.local_dir(self.root), f"ssmbench data prepare {self.name}")


def read_split(dataset: HubDataset, data_dir: Path, split: str, columns: list[str]):
    """[(file, pyarrow Table of `columns`), ...] for every parquet file of `split`, in file order; TaskDataError
    naming the file if it is not parquet, is truncated, lacks a column or holds invalid values (e.g. text
    that is not UTF-8), which would otherwise only fail when a value is converted."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for f in dataset.split_files(data_dir, split):
        try:
            table = pq.read_table(f)
        except (pa.ArrowException, OSError) as e:
            raise corrupt_file(f, f"not a readable parquet file ({type(e).__name__}: {e})".replace("\n", " ")) from e
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise corrupt_file(f, f"has no column {missing} (columns: {table.column_names}); expected the schema of "
                                  f"the hub dataset {dataset.hub_id}")
        for column in columns:
            try:
                table.column(column).validate(full=True)
            except pa.ArrowException as e:
                raise corrupt_file(f, f"column {column!r} holds invalid values ({e})".replace("\n", " ")) from e
        tables.append((f, table.select(columns)))
    return tables


def parquet_row(files: list[Path], row: int) -> str:
    """"row r of <file>": where row `row` of the rows of `files`, read one after another (as read_split reads
    them), lies; only the files' footers are read."""
    import pyarrow.parquet as pq

    rest = row
    for f in files:
        n_rows = pq.ParquetFile(f).metadata.num_rows
        if rest < n_rows:
            return f"row {rest} of {f}"
        rest -= n_rows
    return f"row {row} of {', '.join(str(f) for f in files)}"
