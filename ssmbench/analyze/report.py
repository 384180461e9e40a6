"""analysis.json and the terminal summary of `ssmbench analyze`."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path


def finite_json(value):
    """`value` with every infinite float written as the string "inf" (or "-inf") and NaN as null, so the
    file is standard JSON."""
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def write_json(results: dict, path: Path) -> None:
    path.write_text(json.dumps(finite_json(results), indent=1, allow_nan=False) + "\n")


def _num(value) -> str:
    return "" if value is None else ("inf" if math.isinf(value) else f"{value:.3g}")


def summary_rows(results: dict) -> list[list[str]]:
    """One row per (state, layer): state, layer, kind, tau min / median / max, fraction |lambda| (or decay)
    > 0.99, the delta rule's smallest transition eigenvalue, the median and max Jacobian norm."""
    rows = []
    for state, layers in results["states"].items():
        for layer in layers:
            spectrum = layer.get("lti") or layer.get("decays") or {}
            jac = layer.get("jacobian", {}).get("jacobian_norm_quantiles", {})
            rows.append([state, str(layer["layer"]), layer["kind"],
                         *(_num(spectrum.get(k)) for k in ("tau_min", "tau_median", "tau_max", "frac_above_0.99")),
                         _num(layer.get("delta_rule", {}).get("transition_eig_min")),
                         _num(jac.get("q0.5")), _num(jac.get("q1"))])
    return rows


COLUMNS = ("state", "layer", "kind", "tau min", "tau median", "tau max", "frac > 0.99", "delta eig min",
           "|J| median", "|J| max")


def print_table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=100_000, soft_wrap=True)
    table = Table(title=f"{results['model']} on {results['task']} (seq_len {results['seq_len']}, timescales in steps)")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("state", "kind") else "right")
    for row in summary_rows(results):
        table.add_row(*row)
    console.print(table)
    console.print(f"figures and analysis.json in {Path(results['figures']['dir'])}")
