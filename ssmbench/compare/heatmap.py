"""The heatmap of a pivot for `ssmbench compare --pivot ROW,COL --plot FILE` (matplotlib, imported when plotting).

One square per cell coloured by its mean (the colour bar gives the scale; for lower-is-better metrics the colour
map is reversed, so better is always brighter), annotated with mean ± std; the best of each column in bold;
cells without a value grey with "—".
"""

from __future__ import annotations

from pathlib import Path

from ssmbench.compare.pivot import Pivot, cell_text, label
from ssmbench.errors import UserError


def plot_pivot(pivot: Pivot, path: str | Path, title: str | None = None, digits: int = 3) -> None:
    """Write the heatmap of `pivot` to `path` (format from its suffix: .png, .pdf, .svg)."""
    try:
        import matplotlib
    except ImportError as e:
        raise UserError("--plot needs matplotlib: pip install matplotlib") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    means = np.array([[pivot.cells[(r, c)].mean if pivot.cells[(r, c)].mean is not None else np.nan
                       for c in pivot.cols] for r in pivot.rows], dtype=float)
    cmap = plt.get_cmap("viridis" if pivot.higher_is_better else "viridis_r").with_extremes(bad="lightgrey")
    size = (max(4.0, 1.4 * len(pivot.cols) + 2.5), max(3.0, 0.6 * len(pivot.rows) + 1.5))
    fig, ax = plt.subplots(figsize=size, layout="constrained")
    image = ax.imshow(np.ma.masked_invalid(means), cmap=cmap, aspect="auto")
    finite = means[np.isfinite(means)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for i, row in enumerate(pivot.rows):
        for j, col in enumerate(pivot.cols):
            cell = pivot.cells[(row, col)]
            value, note = cell_text(pivot, cell, digits)
            text = value.replace(" ± ", "\n± ") + (f"\n({note})" if note else "")
            bright = cell.mean is None or (cell.mean >= middle) == pivot.higher_is_better
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="black" if bright else "white",
                    fontweight="bold" if cell.best_in_column else "normal")
    ax.set_xticks(range(len(pivot.cols)), [label(c) for c in pivot.cols], rotation=30, ha="right")
    ax.set_yticks(range(len(pivot.rows)), [label(r) for r in pivot.rows])
    ax.set_xlabel(pivot.col_key)
    ax.set_ylabel(pivot.row_key)
    order = "higher" if pivot.higher_is_better else "lower"
    ax.set_title(title or f"{pivot.metric} (best {pivot.select_by} per cell)")
    fig.colorbar(image, ax=ax, label=f"{pivot.metric} ({order} is better)")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
