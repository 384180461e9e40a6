"""TensorBoard, in this process, over the dashboard's log directory (ssmbench/dashboard/cache.py), kept up to date.

TensorBoard is assembled from its own parts (flags, plugins, the Python event loader, its WSGI app and
Werkzeug server) instead of `tensorboard.program.TensorBoard.main`, so that the loader is ours: a thread
rereads the selected runs every `refresh_s` seconds, rewrites the runs that changed and reloads exactly
those (TensorBoard's own reload thread is off: reload_interval=0). New runs appear on the next page reload.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Callable

from tensorboard import default, program
from tensorboard.backend import application
from tensorboard.backend.event_processing import data_ingester, data_provider, plugin_event_multiplexer

from ssmbench.compare.runs import Run, load_runs
from ssmbench.dashboard.cache import sync
from ssmbench.errors import UserError


def selected_runs(paths: list[str]) -> list[Run]:
    """The runs under `paths` now; none (rather than an error) once every one of them is gone."""
    try:
        return load_runs(paths)
    except UserError:
        return []


class Dashboard:
    """The TensorBoard server of the runs under `paths`, with its log directory `logdir`.

    `start()` writes the log directory, loads it and binds host:port (a UserError when the port is taken);
    `serve()` blocks until Ctrl-C, refreshing every `refresh_s` seconds."""

    def __init__(self, paths: list[str], logdir: Path, host: str, port: int, refresh_s: float):
        self.paths, self.logdir, self.refresh_s = paths, logdir, refresh_s
        self.tensorboard = program.TensorBoard(plugins=default.get_plugins())
        self.tensorboard.configure(logdir=str(logdir), host=host, port=port, reload_interval=0, load_fast="false")
        flags = self.tensorboard.flags
        self.multiplexer = plugin_event_multiplexer.EventMultiplexer(
            size_guidance=data_ingester.DEFAULT_SIZE_GUIDANCE,
            tensor_size_guidance={**data_ingester.DEFAULT_TENSOR_SIZE_GUIDANCE, **flags.samples_per_plugin},
            purge_orphaned_data=flags.purge_orphaned_data,
            max_reload_threads=flags.max_reload_threads,
        )
        self.server = None
        self._stopped = threading.Event()
        self._lock = threading.Lock()

    def refresh(self, runs: list[Run]) -> list[str]:
        """Bring the log directory and the loaded runs up to date with `runs`; returns the runs rewritten or removed."""
        with self._lock:
            changed = sync(self.logdir, runs, forget=lambda names: self.multiplexer.Reload())
            if changed or not self.multiplexer.Runs():
                self.multiplexer.AddRunsFromDirectory(str(self.logdir))
                self.multiplexer.Reload()
            return changed

    def start(self, runs: list[Run]) -> str:
        """Load `runs` and bind the server; returns its URL."""
        self.refresh(runs)
        provider = data_provider.MultiplexerDataProvider(self.multiplexer, str(self.logdir))
        tb = self.tensorboard
        app = application.TensorBoardWSGIApp(tb.flags, tb.plugin_loaders, provider, tb.assets_zip_provider,
                                             self.multiplexer)
        host, port = tb.flags.host, tb.flags.port
        try:
            self.server = program.WerkzeugServer(app, tb.flags)
        except program.TensorBoardPortInUseError:
            raise UserError(f"dashboard: port {port} is in use (another dashboard or TensorBoard?); "
                            f"choose another with --port, e.g. --port {port + 1}") from None
        except program.TensorBoardServerException as e:
            raise UserError(f"dashboard: cannot serve on {host}:{port}: {e.msg}; choose --host/--port") from None
        return self.server.get_url()

    def _refresh_loop(self) -> None:
        while not self._stopped.wait(self.refresh_s):
            try:
                self.refresh(selected_runs(self.paths))
            except OSError as e:  # a file replaced while being read: the next round reads it again
                print(f"dashboard: refresh skipped: {e}", file=sys.stderr, flush=True)

    def serve(self, announce: Callable[[], None]) -> None:
        """Call `announce` (print the URL), then serve until Ctrl-C, refreshing in a background thread; Ctrl-C from
        the announcement on is the normal way to stop (no error), and closes the socket."""
        refresher = threading.Thread(target=self._refresh_loop, name="ssmbench-dashboard-refresh", daemon=True)
        try:
            refresher.start()
            announce()
            self.server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self._stopped.set()
            self.server.server_close()
        refresher.join(timeout=self.refresh_s + 5)
