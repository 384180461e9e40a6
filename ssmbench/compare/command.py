"""`ssmbench compare PATH... [options]`: finished, running and crashed runs side by side (a run that stopped
without saying so, killed or on a lost node, is shown as "died").

    ssmbench compare outputs/multirun/2026-01-01_12-00-00           one row per run, sorted by test/acc
    ssmbench compare 'outputs/listops/*' --group-by model --format markdown
    ssmbench compare outputs/multirun/<date> --plot curves.png --plot-metric val/acc --group-by model
    ssmbench compare outputs/multirun/<date> --pivot model,task --format markdown   best lr per model x task
    ssmbench compare outputs/multirun/<date> --pivot model,task+task.seq_len --plot heatmap.png
    ssmbench compare <sweep> --pivot model,task --metric test/loss --select-by val/loss --lower-is-better

Reading run directories: ssmbench/compare/runs.py; which keys differ, grouping and sorting:
ssmbench/compare/table.py; output formats: ssmbench/compare/render.py; curves: ssmbench/compare/plot.py;
pivots: ssmbench/compare/pivot.py and their heatmaps: ssmbench/compare/heatmap.py.
"""

from __future__ import annotations

import argparse
import sys

from ssmbench.compare.pivot import (
    pivot_runs,
    render_pivot_csv,
    render_pivot_json,
    render_pivot_markdown,
    render_pivot_rich,
)
from ssmbench.compare.render import render_csv, render_json, render_markdown, render_rich
from ssmbench.compare.runs import AGED_STATUSES, age, load_runs, optuna_results
from ssmbench.compare.table import DEFAULT_METRICS, compare_runs
from ssmbench.errors import UserError

FORMATS = ("table", "markdown", "csv", "json")
# Options of the run table (and --group-by) that a pivot does not use, and the pivot's own.
TABLE_ONLY = ("group_by", "sort", "ascending", "metrics", "keys")
PIVOT_ONLY = ("metric", "select_by", "lower_is_better")
PIVOT_DEFAULTS = {"metric": "test/acc", "select_by": "val/acc_best"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UserError(f"compare: {message} (ssmbench compare --help)")


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="ssmbench compare",
        description="Compare runs: one row per run (or group) with the config keys that differ between them "
                    "and their final metrics, or with --pivot a ROW x COL table of the best setting per cell. "
                    "Unfinished and crashed runs are shown with their status.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="run directories, directories above runs (a multirun sweep, outputs/), or globs")
    p.add_argument("--group-by", type=_list, metavar="KEYS",
                   help="aggregate runs with equal values of these keys, e.g. model,task: mean ± std (sample) "
                        "and count over each group's completed runs")
    p.add_argument("--sort", metavar="KEY", help="column to sort by (default test/acc), descending")
    p.add_argument("--ascending", action="store_true", help="sort ascending (e.g. for a loss)")
    p.add_argument("--metrics", type=_list, metavar="NAMES",
                   help=f"metric columns (default: {','.join(DEFAULT_METRICS)}); any key of results.json "
                        "metrics or fields")
    p.add_argument("--keys", type=_list, metavar="KEYS", help="config keys to show even when they do not differ")
    p.add_argument("--pivot", metavar="ROW,COL",
                   help="a ROW x COL table instead, e.g. model,task: per cell the setting (the config keys that "
                        "differ between the cell's runs, seed aside; typically optimizer.lr) with the best mean "
                        "--select-by, shown as mean ± std over its seeds of --metric, the best of each column in "
                        "bold. A key is a config-group choice or config key; join keys with + (task+task.seq_len)")
    p.add_argument("--metric", metavar="NAME", help="--pivot: metric of the cells (default test/acc)")
    p.add_argument("--select-by", metavar="NAME",
                   help="--pivot: metric that chooses each cell's setting (default val/acc_best: choosing on the "
                        "validation set keeps the test set out of the choice)")
    p.add_argument("--lower-is-better", action="store_true",
                   help="--pivot: select the lowest --select-by and bold the lowest --metric (for losses)")
    p.add_argument("--format", choices=FORMATS, default="table", help="output format (default table)")
    p.add_argument("--plot", metavar="FILE",
                   help="also write learning curves (with --pivot: the pivot's heatmap) to FILE (.png, .pdf or .svg)")
    p.add_argument("--plot-metric", default="val/acc", metavar="NAME", help="metric of the curves (default val/acc)")
    p.add_argument("--plot-x", default="step", choices=("step", "epoch"), help="x axis of the curves (default step)")
    return p


def compare(argv: list[str]) -> None:
    """Run `ssmbench compare` with arguments `argv`; errors are UserErrors (one line for the CLI)."""
    if any(a in ("-h", "--help") for a in argv):
        parser().print_help()
        return
    args = parser().parse_args(argv)
    if args.pivot is not None:
        rows, cols = _pivot_keys(args)
        compare_pivot(load_runs(args.paths), args, rows, cols)
        return
    given = [name for name in PIVOT_ONLY if getattr(args, name)]
    if given:
        option = given[0].replace("_", "-")
        raise UserError(f"--{option} applies only with --pivot ROW,COL (the run table's columns are --metrics)")
    runs = load_runs(args.paths)
    comparison = compare_runs(runs, metrics=args.metrics, keys=args.keys, group_by=args.group_by,
                              sort=args.sort, ascending=args.ascending)
    optuna = optuna_results(runs)
    ages = {str(r.path): age(r) for r in runs if r.status in AGED_STATUSES}
    if args.format == "table":
        from rich.console import Console

        # Piped output is not cut to 80 columns: the table keeps its natural width.
        console = Console() if sys.stdout.isatty() else Console(width=100_000, soft_wrap=True)
        render_rich(comparison, console, ages, optuna)
    elif args.format == "markdown":
        sys.stdout.write(render_markdown(comparison, ages, optuna))
    elif args.format == "csv":
        sys.stdout.write(render_csv(comparison))
    else:
        sys.stdout.write(render_json(comparison, optuna))
    if args.plot:
        from ssmbench.compare.plot import plot_curves

        skipped = plot_curves(runs, args.plot, metric=args.plot_metric, group_by=args.group_by, x=args.plot_x)
        note = f" ({len(skipped)} runs without {args.plot_metric} left out: {', '.join(skipped)})" if skipped else ""
        print(f"wrote {args.plot}{note}", file=sys.stderr)


def _pivot_keys(args: argparse.Namespace) -> tuple[str, str]:
    """The two keys of --pivot; a UserError for options that only the run table takes."""
    given = [name for name in TABLE_ONLY if getattr(args, name)]
    if given:
        option = given[0].replace("_", "-")
        raise UserError(f"--{option} does not combine with --pivot (a pivot groups by its ROW,COL keys itself); "
                        f"drop one of them" + ("; --metric names the pivot's metric" if option == "metrics" else ""))
    keys = _list(args.pivot)
    if len(keys) != 2 or keys[0] == keys[1]:
        raise UserError(f"--pivot {args.pivot}: give two different keys ROW,COL, e.g. --pivot model,task")
    return keys[0], keys[1]


def compare_pivot(runs, args: argparse.Namespace, rows: str, cols: str) -> None:
    """Print (and with --plot draw) the `rows` x `cols` pivot of `runs` in args.format."""
    pivot = pivot_runs(runs, rows, cols, metric=args.metric or PIVOT_DEFAULTS["metric"],
                       select_by=args.select_by or PIVOT_DEFAULTS["select_by"],
                       higher_is_better=not args.lower_is_better)
    if args.format == "table":
        from rich.console import Console

        render_pivot_rich(pivot, Console() if sys.stdout.isatty() else Console(width=100_000, soft_wrap=True))
    elif args.format == "markdown":
        sys.stdout.write(render_pivot_markdown(pivot))
    elif args.format == "csv":
        sys.stdout.write(render_pivot_csv(pivot))
    else:
        sys.stdout.write(render_pivot_json(pivot))
    if args.plot:
        from ssmbench.compare.heatmap import plot_pivot

        plot_pivot(pivot, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
