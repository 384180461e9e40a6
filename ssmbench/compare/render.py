"""Rendering a Comparison: a rich table (terminal), Markdown (papers, READMEs), CSV and JSON (scripts).

Table and Markdown round numbers for reading; CSV and JSON keep every digit.
"""

from __future__ import annotations

import csv
import io
import json
import math

from ssmbench.compare.table import Comparison
from ssmbench.runinfo import jsonable

LABELS = {
    "params": "params",
    "wall_time_s": "wall time (s)",
    "train_time_s": "train time (s)",
    "train_samples_per_s": "samples/s",
    "train_tokens_per_s": "tokens/s",
}
STATUS_STYLE = {"completed": "green", "running": "yellow", "failed": "bold red", "died": "bold red",
                "interrupted": "red", "preempted": "red", "missing": "red", "unreadable": "red"}
PARTIAL_NOTE = "* last logged value of an unfinished run (csv/metrics.csv)"


def fmt_metric(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.4f}"


def fmt_config(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def fmt_aggregate(stats: dict) -> str:
    if stats["mean"] is None:
        return "-"
    if stats["std"] is None:
        return fmt_metric(stats["mean"])
    return f"{fmt_metric(stats['mean'])} ± {fmt_metric(stats['std']) if stats['std'] else '0'}"


def fmt_status(record: dict, age: str | None = None, width: int = 60) -> str:
    """The status cell: the status, with `age` (given for running and died runs) "died (12m ago)", and the
    error if any, cut to `width`."""
    status = f"{record['status']} ({age} ago)" if age else record["status"]
    if record.get("error"):
        text = f"{status}: {record['error']}".replace("\n", " ")
        return text if len(text) <= width else text[: width - 1] + "…"
    return status


def fmt_counts(status: dict) -> str:
    return ", ".join(f"{n} {s}" for s, n in status.items())


def headers(comparison: Comparison) -> list[str]:
    if comparison.groups is not None:
        return [*comparison.keys, "runs", "status", *(LABELS.get(m, m) for m in comparison.metrics)]
    return ["run", "status", *comparison.keys, *(LABELS.get(m, m) for m in comparison.metrics)]


def text_rows(comparison: Comparison, ages: dict[str, str] | None = None) -> list[list[str]]:
    """Every record as display strings, in the column order of `headers`."""
    ages = ages or {}
    rows = []
    if comparison.groups is not None:
        for g in comparison.groups:
            rows.append([*(fmt_config(g["group"][k]) for k in comparison.keys), str(g["runs"]), fmt_counts(g["status"]),
                         *(fmt_aggregate(g["metrics"][m]) for m in comparison.metrics)])
        return rows
    for r in comparison.runs:
        values = [fmt_metric(r["metrics"][m]) + ("*" if m in r["partial"] else "") for m in comparison.metrics]
        rows.append([r["run"], fmt_status(r, ages.get(r["path"])), *(fmt_config(r["config"][k]) for k in comparison.keys),
                     *values])
    return rows


def has_partial(comparison: Comparison) -> bool:
    return comparison.groups is None and any(r["partial"] for r in comparison.runs)


def optuna_lines(optuna: list[dict]) -> list[str]:
    lines = []
    for sweep in optuna:
        params = ", ".join(f"{k}={fmt_config(v)}" for k, v in (sweep["best_params"] or {}).items())
        lines.append(f"optuna best of {sweep['sweep']}: {fmt_metric(sweep['best_value'])} with {params}")
    return lines


def render_rich(comparison: Comparison, console, ages: dict[str, str] | None = None, optuna: list[dict] = ()) -> None:
    """Print the comparison as a rich table: one row per run (or group), status coloured."""
    from rich.table import Table

    grouped = comparison.groups is not None
    title = f"{len(comparison.records())} {'groups' if grouped else 'runs'}"
    if comparison.sort:
        title += f", sorted by {comparison.sort}"
    table = Table(title=title, header_style="bold", title_justify="left")
    n_text = len(comparison.keys) + 2
    for i, name in enumerate(headers(comparison)):
        table.add_column(name, justify="left" if i < n_text else "right", no_wrap=True)
    records = comparison.records()
    for record, row in zip(records, text_rows(comparison, ages)):
        if grouped:
            table.add_row(*row)
            continue
        style = STATUS_STYLE.get(record["status"], "")
        status_cell = f"[{style}]{row[1]}[/]" if style else row[1]
        table.add_row(row[0], status_cell, *row[2:], style="dim" if record["status"] != "completed" else None)
    console.print(table)
    if has_partial(comparison):
        console.print(PARTIAL_NOTE, style="dim")
    for line in optuna_lines(list(optuna)):
        console.print(line)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(comparison: Comparison, ages: dict[str, str] | None = None, optuna: list[dict] = ()) -> str:
    head = headers(comparison)
    n_text = len(comparison.keys) + 2
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(":---" if i < n_text else "---:" for i in range(len(head))) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in text_rows(comparison, ages)]
    notes = ([PARTIAL_NOTE] if has_partial(comparison) else []) + optuna_lines(list(optuna))
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def render_csv(comparison: Comparison) -> str:
    """Flat CSV with full precision: per run `run,path,status,error,<keys>,<metrics>`; per group
    `<keys>,runs,status,<metric>_mean,<metric>_std,<metric>_n`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if comparison.groups is not None:
        writer.writerow([*comparison.keys, "runs", "status",
                         *(f"{m}_{s}" for m in comparison.metrics for s in ("mean", "std", "n"))])
        for g in comparison.groups:
            writer.writerow([*(g["group"][k] for k in comparison.keys), g["runs"], fmt_counts(g["status"]),
                             *(_csv(g["metrics"][m][s]) for m in comparison.metrics for s in ("mean", "std", "n"))])
    else:
        writer.writerow(["run", "path", "status", "error", "partial", *comparison.keys, *comparison.metrics])
        for r in comparison.runs:
            writer.writerow([r["run"], r["path"], r["status"], _csv(r["error"]), " ".join(r["partial"]),
                             *(_csv(r["config"][k]) for k in comparison.keys),
                             *(_csv(r["metrics"][m]) for m in comparison.metrics)])
    return out.getvalue()


def _csv(value):
    return "" if value is None else repr(value) if isinstance(value, float) else value


def render_json(comparison: Comparison, optuna: list[dict] = ()) -> str:
    """{"keys": [...], "metrics": [...], "sort": ..., "runs" | "groups": [...], "optuna": [...]}"""
    data = {"keys": comparison.keys, "metrics": comparison.metrics, "sort": comparison.sort}
    data["groups" if comparison.groups is not None else "runs"] = comparison.records()
    data["optuna"] = list(optuna)
    return json.dumps(jsonable(data), indent=2) + "\n"
