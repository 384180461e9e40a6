"""Learning curves for `ssmbench compare --plot FILE`: one metric against step, one colour per run or group.

Curves come from each run's csv/metrics.csv. With --group-by, the runs of a group share a colour;
when they were logged at the same steps the group is drawn as its mean with a band of +- one
(sample) standard deviation, otherwise every run is drawn in the group's colour.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from ssmbench.compare.runs import Run
from ssmbench.errors import UserError


def _label(values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def curve_groups(runs: list[Run], metric: str, group_by: list[str] | None, x: str = "step") -> dict[str, list]:
    """{legend label: [(run, xs, ys), ...]} for every run that logged `metric`."""
    groups: dict[str, list] = {}
    for run in runs:
        xs, ys = run.curve(metric, x)
        if not xs:
            continue
        label = _label({k: run.value(k) for k in group_by}) if group_by else run.name
        groups.setdefault(label, []).append((run, xs, ys))
    return groups


def plot_curves(runs: list[Run], out: str | Path, metric: str = "val/acc", group_by: list[str] | None = None,
                x: str = "step") -> list[str]:
    """Write the learning curves of `metric` to `out` (format from its suffix: .png, .pdf, .svg).
    Returns the names of runs that had no logged `metric` (left out of the plot)."""
    try:
        import matplotlib
    except ImportError as e:
        raise UserError("--plot needs matplotlib: pip install matplotlib") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = curve_groups(runs, metric, group_by, x)
    if not groups:
        raise UserError(f"--plot: no run logged {metric} in csv/metrics.csv; choose another with --plot-metric "
                        f"(e.g. val/acc, val/loss, train/loss) and train with logger=csv")
    plotted = {id(run) for members in groups.values() for run, _, _ in members}
    skipped = [r.name for r in runs if id(r) not in plotted]
    colours = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20").colors
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    for i, (label, members) in enumerate(groups.items()):
        colour = colours[i % len(colours)]
        same_steps = all(xs == members[0][1] for _, xs, _ in members)
        if len(members) > 1 and same_steps:
            xs = members[0][1]
            columns = list(zip(*(ys for _, _, ys in members)))
            mean = [statistics.fmean(c) for c in columns]
            std = [statistics.stdev(c) for c in columns]
            ax.plot(xs, mean, color=colour, marker="o" if len(xs) < 20 else None, label=f"{label} (n={len(members)})")
            ax.fill_between(xs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                            color=colour, alpha=0.2, linewidth=0)
        else:
            for j, (_, xs, ys) in enumerate(members):
                ax.plot(xs, ys, color=colour, marker="o" if len(xs) < 20 else None, alpha=0.9 if len(members) == 1 else 0.6,
                        label=(f"{label} (n={len(members)})" if len(members) > 1 else label) if j == 0 else None)
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} against {x}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return skipped
