"""`ssmbench compare`: reads run directories and shows the runs side by side (tables, pivots, curves).

Package layout (data flows downward; each module imports only the ones below it):

    command.py   `compare(argv)`: the entry point of `ssmbench compare` and its argument parsing
    render.py    output formats of a Comparison: rich table, Markdown, CSV, JSON
    plot.py      learning curves for `--plot FILE` (matplotlib, imported only when plotting)
    heatmap.py   the heatmap of a pivot for `--pivot ... --plot FILE` (matplotlib, imported only when plotting)
    pivot.py     `--pivot ROW,COL`: a ROW x COL table, each cell the best setting's mean ± std over seeds, and its
                 Markdown / CSV / JSON / rich renderings
    table.py     the Comparison: which config keys differ, metric columns, grouping and sorting
    runs.py      finding and reading run directories (results.json, .hydra/, csv/metrics.csv),
                 `effective_status` (a "running" run whose process is gone is "died")

`from ssmbench.compare import compare` is the entry point that ssmbench/cli.py dispatches to.
"""

from ssmbench.compare.command import compare

__all__ = ["compare"]
