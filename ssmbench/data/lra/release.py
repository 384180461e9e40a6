"""Where the files of the Long Range Arena release are looked for.

The release archive (LRA_URL) extracted into `data_dir` gives `<data_dir>/lra_release/lra_release/...`
(listops-1000/, tsv_data/, pathfinder32/, ...); `ssmbench data generate ...` writes the same layout
under `<data_dir>/lra_release/`. A task searches RELEASE_DIRS in order and reads the first one that
holds all of its files, unless the task's `root` option names the directory explicitly. The release's
own location comes first, so files generated earlier never shadow the published data once it is
extracted (`task.root=lra_release` reads the generated files then).

`ReleaseTask` is the FileTask of the tasks that read these files.
"""

from __future__ import annotations

from pathlib import Path

from ssmbench.data.base import DataStatus
from ssmbench.data.files import FileTask
from ssmbench.data.storage import missing_data

LRA_URL = "https://storage.googleapis.com/long-range-arena/lra_release.gz"
GENERATED_MARKER = "GENERATED.json"  # written beside generated files by `ssmbench data generate`
RELEASE_DIRS = ("lra_release/lra_release", "lra_release")  # the release archive first, then generated files


def candidate_roots(data_dir: Path, root: str | Path | None) -> list[Path]:
    """The directories that may hold the release: `root` if given (relative to data_dir), else RELEASE_DIRS."""
    if root is not None:
        return [data_dir / Path(root).expanduser()]
    return [data_dir / d for d in RELEASE_DIRS]


def find_root(data_dir: Path, root: str | Path | None, needed: list[str]) -> Path | None:
    """The first candidate root under which every path of `needed` exists, or None."""
    for candidate in candidate_roots(data_dir, root):
        if all((candidate / rel).exists() for rel in needed):
            return candidate
    return None


def looked_for(data_dir: Path, root: str | Path | None, pattern: str) -> list[str]:
    """`pattern` (e.g. "listops-1000/basic_{train,val,test}.tsv") under each candidate root, for the
    missing-data message."""
    return [f"{c}/{pattern}" for c in candidate_roots(data_dir, root)]


def download_hint(data_dir: Path) -> str:
    return f"download the LRA release {LRA_URL} and extract it into {data_dir} (`tar xzf lra_release.gz -C {data_dir}`)"


class ReleaseTask(FileTask):
    """A FileTask that reads files of the release layout from `<release root>/<subdir>/`, the release root being
    the first candidate root (`find_root`) that holds every path of `needed`. A task sets, as class attributes
    or in its constructor where they depend on its options,

        subdir          the directory of its files below the release root (`ssmbench data list` shows it)
        needed          the paths below subdir that must exist, e.g. the three split files
        pattern         what the missing-data message says was looked for below subdir
        generator       the `ssmbench data generate` command that writes the same files (None: there is none),
                        generator_options its options that select these files

    and may override `_files_in` (default: the `needed` paths) and `released_as` (the release's own files)."""

    subdir: str
    needed: tuple[str, ...]
    pattern: str
    generator: str | None = None
    generator_options: str = ""
    released_as = "LRA release"

    def __init__(self, *, root: str | None = None, **metadata):
        """root: the directory holding `subdir` (relative to data_dir or absolute); None searches RELEASE_DIRS."""
        super().__init__(**metadata)
        self.root_option = root

    def _files_in(self, directory: Path) -> list[Path]:
        """The source files in `directory` (`<release root>/<subdir>`); empty if it holds none."""
        return [directory / rel for rel in self.needed]

    def _release_root(self) -> Path | None:
        """The release root to read (`root` if given, else the first of RELEASE_DIRS holding `needed`), or None."""
        return find_root(self.root, self.root_option, [f"{self.subdir}/{rel}" for rel in self.needed])

    def _find_files(self) -> list[Path]:
        found = self._release_root()
        files = [] if found is None else self._files_in(found / self.subdir)
        if not files:
            remedy = download_hint(self.root)
            if self.generator:
                remedy += f", or generate it with `{self._generate_command()} --data-dir {self.root}`"
            raise missing_data(self.name, looked_for(self.root, self.root_option, f"{self.subdir}/{self.pattern}"),
                               remedy)
        return files

    def data_status(self) -> DataStatus:
        found = self._release_root()
        location = (found or candidate_roots(self.root, self.root_option)[0]) / self.subdir
        source, remedy = self.released_as, download_hint(self.root)
        if self.generator:
            remedy += f", or `{self._generate_command()}`"
            if (location / GENERATED_MARKER).is_file():
                source = f"LRA format, generated by `ssmbench data generate {self.generator}`"
        return self._status(source, found is not None, location, remedy)

    def _generate_command(self) -> str:
        return f"ssmbench data generate {self.generator}{self.generator_options}"
