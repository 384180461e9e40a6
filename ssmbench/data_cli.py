"""`ssmbench data list | prepare | generate`: see, fetch and generate the data of every task.

    ssmbench data list [--data-dir DIR]
        every task of conf/task: its source, whether its data is on disk, its size, where it lives
    ssmbench data prepare TASK [--data-dir DIR] [task.KEY=VALUE ...]
        download (Hugging Face) or check the files of TASK, then process and cache them
    ssmbench data generate listops [--data-dir DIR] [--seed N] [--n-train N] ...
    ssmbench data generate pathfinder [--data-dir DIR] [--resolution R] [--difficulty D] [--n-images N] ...
        write the LRA files from the published generators, in the release layout

DIR defaults to the config's `paths.data_dir` (`$SSMBENCH_DATA`, else ./data), the directory
`ssmbench train` reads. Tasks are built from their configs exactly as `ssmbench train task=TASK`
builds them, so `prepare` processes the data a run will read. A bad option (a count below its
range, an unknown choice) ends the command with one line, exit 2, before anything is written;
generated files and directories replace earlier ones atomically.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Callable, NoReturn

from ssmbench.errors import UserError


def compose_config(overrides: list[str]):
    """The composed root config of `ssmbench train <overrides>` (resolvers registered)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    from ssmbench.config import config_dir, register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            return compose("config", overrides)
    except HydraException as e:
        raise UserError(f"{type(e).__name__}: {e}".replace("\n", " ")) from e
    finally:
        GlobalHydra.instance().clear()


def compose_task(task: str, data_dir: str | None, overrides: list[str] = ()):
    """The datamodule of conf/task/<task>.yaml (not yet prepared), with paths.data_dir = data_dir if given."""
    from ssmbench.build import instantiate_or_explain
    from ssmbench.config import config_groups

    tasks = config_groups()["task"]
    if task not in tasks:
        raise UserError(f"unknown task {task!r}; tasks: {', '.join(tasks)}")
    cfg = compose_config([f"task={task}", *([f"paths.data_dir={data_dir}"] if data_dir else []), *overrides])
    return instantiate_or_explain(cfg.task, f"task {task}")


def resolved_data_dir(data_dir: str | None) -> Path:
    """--data-dir if given, else the config's paths.data_dir (the directory `ssmbench train` reads), absolute."""
    from ssmbench.data.storage import resolve_data_dir

    return resolve_data_dir(data_dir or compose_config([]).paths.data_dir)


def list_tasks(data_dir: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    from ssmbench.config import config_groups
    from ssmbench.data.storage import human_size

    console = Console()
    table = Table(title=f"tasks (data directory {resolved_data_dir(data_dir)})")
    for column in ("task", "source", "ready", "size", "location"):
        table.add_column(column, overflow="fold")
    missing = []
    for task in config_groups()["task"]:
        try:
            status = compose_task(task, data_dir).data_status()
        except UserError as e:
            table.add_row(task, f"[red]{e}[/]", "", "", "")
            continue
        ready = "[green]yes[/]" if status.ready else "[red]no[/]"
        size = human_size(status.size_bytes) if status.size_bytes else ""
        table.add_row(task, status.source, ready, size, str(status.location or ""))
        if not status.ready:
            missing.append((task, status.remedy))
    console.print(table)
    for task, remedy in missing:
        console.print(f"[bold]{task}[/]: {remedy}", soft_wrap=True)


def prepare(task: str, data_dir: str | None, overrides: list[str]) -> None:
    from rich.console import Console

    dm = compose_task(task, data_dir, overrides)
    dm.prepare_data()
    dm.setup("fit")
    splits = {"train": dm.train_set, "val": dm.val_set, "test": dm.test_set}
    sizes = ", ".join(f"{name} {len(ds)}" for name, ds in splits.items())
    status = dm.data_status()
    Console().print(f"task {task}: ready ({status.source}; {sizes} examples; read from {status.location or 'memory'})",
                    soft_wrap=True)


def _refuse_overwrite(paths: list[Path], force: bool) -> None:
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        raise UserError(f"{existing[0]} already exists; pass --force to replace it")


def generate_listops_files(args: argparse.Namespace) -> None:
    from ssmbench.data.lra.listops import SUBDIR
    from ssmbench.data.lra.listops_generator import SPLIT_FILES, generate_listops, write_listops

    out = resolved_data_dir(args.data_dir) / "lra_release" / SUBDIR
    _refuse_overwrite([out / name for name in SPLIT_FILES], args.force)
    params = {"n_train": args.n_train, "n_val": args.n_val, "n_test": args.n_test, "seed": args.seed,
              "max_depth": args.max_depth, "max_args": args.max_args, "min_length": args.min_length,
              "max_length": args.max_length}
    try:
        splits = generate_listops(**params)
    except ValueError as e:
        raise UserError(f"generate listops: {e}") from e
    paths = write_listops(out, splits, marker=_marker("listops", params, args.command_line))
    print(f"wrote {', '.join(str(p) for p in paths)}")


def generate_pathfinder_files(args: argparse.Namespace) -> None:
    from ssmbench.data.lra.pathfinder import DIFFICULTIES
    from ssmbench.data.lra.pathfinder_generator import generate_pathfinder

    root = resolved_data_dir(args.data_dir) / "lra_release"
    _refuse_overwrite([root / f"pathfinder{args.resolution}" / DIFFICULTIES[args.difficulty]], args.force)
    params = {"resolution": args.resolution, "difficulty": args.difficulty, "n_images": args.n_images,
              "seed": args.seed, "batch_size": args.batch_size}
    try:
        out = generate_pathfinder(root, **params, marker=_marker("pathfinder", params, args.command_line))
    except ValueError as e:
        raise UserError(f"generate pathfinder: {e}") from e
    print(f"wrote {params['n_images']} images and their metadata under {out}")


def _marker(generator: str, params: dict, command_line: str) -> dict:
    """The record, written beside the generated files, of the generator and settings that wrote them."""
    return {"generator": generator, **params, "command": command_line}


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (`error: <command>: <problem>`, exit 2), without the usage block."""

    def error(self, message: str) -> NoReturn:
        from ssmbench.errors import fail

        fail(f"{self.prog}: {message} (see `{self.prog} --help`)")


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= minimum, else an error (naming the option) that gives the range."""

    def integer(text: str) -> int:  # a ValueError here reads "invalid integer value: '<text>'"
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is out of range; give an integer >= {minimum}")
        return value

    return integer


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="ssmbench data", description="see, fetch and generate the data of every task")
    commands = top.add_subparsers(dest="command", required=True, metavar="{list,prepare,generate}")
    data_dir = argparse.ArgumentParser(add_help=False)
    data_dir.add_argument("--data-dir", help="the data directory (default: the config's paths.data_dir, "
                                             "$SSMBENCH_DATA or ./data)")

    commands.add_parser("list", parents=[data_dir], help="every task: source, ready, size on disk, location")

    prep = commands.add_parser("prepare", parents=[data_dir],
                               help="download or check, then process and cache a task's data")
    prep.add_argument("task", help="a task of conf/task (see `ssmbench data list`)")
    prep.add_argument("overrides", nargs="*", help="task config overrides, e.g. task.resolution=64 task.seq_len=4096")

    gen = commands.add_parser("generate", help="write LRA data from the published generators").add_subparsers(
        dest="generator", required=True, metavar="{listops,pathfinder}")
    lo = gen.add_parser("listops", parents=[data_dir], help="ListOps TSVs into <data-dir>/lra_release/listops-1000")
    lo.add_argument("--seed", type=int, default=0)
    lo.add_argument("--n-train", type=at_least(1), default=96000, help="training expressions (>= 1)")
    lo.add_argument("--n-val", type=at_least(1), default=2000, help="validation expressions (>= 1)")
    lo.add_argument("--n-test", type=at_least(1), default=2000, help="test expressions (>= 1)")
    lo.add_argument("--max-depth", type=at_least(2), default=10, help="deepest operator nesting (>= 2)")
    lo.add_argument("--max-args", type=at_least(2), default=10, help="most arguments of an operator (>= 2)")
    lo.add_argument("--min-length", type=at_least(0), default=500,
                    help="lengths lie strictly between min and max length (>= 0)")
    lo.add_argument("--max-length", type=at_least(2), default=2000, help="the bound above every length (>= 2)")
    lo.add_argument("--force", action="store_true", help="replace existing files")

    pf = gen.add_parser("pathfinder", parents=[data_dir],
                        help="Pathfinder images into <data-dir>/lra_release/pathfinder<R>/curv_<D>")
    pf.add_argument("--resolution", type=int, default=32, choices=(32, 64, 128, 256))
    pf.add_argument("--difficulty", default="14", choices=("baseline", "9", "14"))
    pf.add_argument("--n-images", type=at_least(1), default=200000,
                    help="images per difficulty (>= 1; default 200000: 160000 / 20000 / 20000 after the 80/10/10 "
                         "split)")
    pf.add_argument("--seed", type=at_least(0), default=0, help="(>= 0)")
    pf.add_argument("--batch-size", type=at_least(1), default=1000,
                    help="images per imgs/<b> directory and metadata file (>= 1)")
    pf.add_argument("--force", action="store_true", help="replace an existing directory of this difficulty")
    return top


def main(argv: list[str]) -> None:
    from ssmbench.errors import fail

    top = parser()
    args, extra = top.parse_known_args(argv)
    if args.command == "prepare":  # overrides may also follow --data-dir
        args.overrides += [e for e in extra if "=" in e and not e.startswith("-")]
        extra = [e for e in extra if e not in args.overrides]
    if extra:
        top.error(f"unrecognized arguments: {' '.join(extra)}")
    args.command_line = shlex.join(["ssmbench", "data", *argv])
    try:
        if args.command == "list":
            list_tasks(args.data_dir)
        elif args.command == "prepare":
            prepare(args.task, args.data_dir, args.overrides)
        elif args.generator == "listops":
            generate_listops_files(args)
        else:
            generate_pathfinder_files(args)
    except UserError as e:
        fail(str(e))
