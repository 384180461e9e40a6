"""`ssmbench dashboard [PATH ...] [--port 6006] [--host 127.0.0.1]`: the runs under PATH in TensorBoard, local,
no account and no network needed.

    ssmbench dashboard                                   every run under outputs/
    ssmbench dashboard outputs/multirun/<date>           one sweep: HParams table, curves overlaid
    ssmbench dashboard outputs --host 0.0.0.0 --port 8080   reachable from other machines (your choice)
"""

from __future__ import annotations

import argparse

from ssmbench.compare.runs import load_runs
from ssmbench.dashboard.cache import logdir_for
from ssmbench.dashboard.optuna import dashboard_command, find_studies
from ssmbench.dashboard.server import Dashboard
from ssmbench.errors import UserError

DEFAULT_PORT = 6006       # TensorBoard's own default
DEFAULT_HOST = "127.0.0.1"
DEFAULT_REFRESH_S = 5.0   # TensorBoard's own default reload interval


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UserError(f"dashboard: {message} (ssmbench dashboard --help)")


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="ssmbench dashboard",
        description="Serve a local web dashboard (TensorBoard) over runs: the HParams table of every run with the "
                    "config keys that differ, its status and final metrics; learning curves overlaid. Runs logged "
                    "to CSV only are converted (into ~/.cache/ssmbench/dashboard, the runs are not touched). "
                    "New runs appear on page reload. Ctrl-C stops it.",
    )
    p.add_argument("paths", nargs="*", default=["outputs"], metavar="PATH",
                   help="run directories, directories above runs (a multirun sweep, outputs/), or globs "
                        "(default: outputs)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to serve on (default {DEFAULT_PORT})")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to bind (default {DEFAULT_HOST}: only this machine can connect; "
                        "--host 0.0.0.0 serves every network interface, without authentication)")
    p.add_argument("--refresh", type=float, default=DEFAULT_REFRESH_S, metavar="SECONDS",
                   help=f"how often runs are reread for new runs and new metrics (default {DEFAULT_REFRESH_S:g})")
    return p


def dashboard(argv: list[str]) -> None:
    """Run `ssmbench dashboard` with arguments `argv` until Ctrl-C; errors are UserErrors (one line for the CLI)."""
    if any(a in ("-h", "--help") for a in argv):
        parser().print_help()
        return
    args = parser().parse_args(argv)
    if not 0 <= args.port <= 65535:
        raise UserError(f"dashboard: --port {args.port} is not a port; give one in 1..65535 (0: any free port)")
    if args.refresh <= 0:
        raise UserError(f"dashboard: --refresh {args.refresh:g} must be > 0 seconds")
    runs = load_runs(args.paths)
    server = Dashboard(args.paths, logdir_for(args.paths), args.host, args.port, args.refresh)
    url = server.start(runs)
    studies = find_studies(list(dict.fromkeys(r.path.parent for r in runs)))

    def announce() -> None:
        print(f"ssmbench dashboard: {len(runs)} runs from {', '.join(args.paths)} at {url}  (Ctrl-C to stop)", flush=True)
        for study in studies:
            print(f"Optuna study: {dashboard_command(study)}  (pip install 'ssmbench[dashboard]')", flush=True)

    server.serve(announce)
