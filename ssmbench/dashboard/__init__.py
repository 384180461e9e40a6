"""`ssmbench dashboard`: the runs under a path in a local web dashboard (TensorBoard: HParams table, curves).

Package layout (data flows downward; each module imports only the ones below it):

    command.py   `dashboard(argv)`: the entry point of `ssmbench dashboard` and its argument parsing
    server.py    TensorBoard in this process over the log directory, refreshed by a background thread
    cache.py     the log directory of a selection of runs: one event file per run, rewritten when it changes
    events.py    a run's curves and final metrics (csv/metrics.csv, results.json, its own TensorBoard files)
    hparams.py   the HParams columns (differing config keys, status) and metrics, each run's values
    optuna.py    Optuna studies in SQLite in a sweep directory (sweep=lr_wd) and the optuna-dashboard command

Runs are read with ssmbench/compare/runs.py (`load_runs`), and which keys differ is compare's `differing_keys`.
"""

from ssmbench.dashboard.command import dashboard

__all__ = ["dashboard"]
