"""`ssmbench dashboard`: event files written from hand-made run directories read back with TensorBoard's own
reader; the real server over HTTP (subprocess, Ctrl-C); the HParams table in a headless browser (chromium)."""

import asyncio
import base64
import json
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata
from tensorboard.summary.writer.record_writer import RecordWriter

from ssmbench.compare.runs import load_runs
from ssmbench.config import config_dir, register_resolvers
from ssmbench.dashboard import dashboard
from ssmbench.dashboard.cache import logdir_for, sync
from ssmbench.dashboard.optuna import dashboard_command, find_studies
from tests.helpers import REPO_ROOT, cli_env, run_cli
from tests.test_compare import make_run

CURVE = [(0, 9, {"train/loss": 2.0}), (0, 9, {"train/acc": 0.25}), (0, 9, {"val/acc": 0.3, "val/loss": 1.9}),
         (1, 19, {"train/loss": 1.5, "train/acc": 0.5}), (1, 19, {"val/acc": 0.6, "val/loss": 1.2}),
         (1, 20, {"test/acc": 0.55, "test/loss": 1.3})]


def make_sweep(root: Path, lrs=(1e-3, 3e-3, 1e-2)) -> Path:
    """Runs 0, 1, 2 of a sweep over lr, completed, each with the curve above (val/acc scaled by lr index)."""
    for i, lr in enumerate(lrs):
        curve = [(e, s, {k: (v + i / 10 if k.endswith("acc") else v) for k, v in row.items()}) for e, s, row in CURVE]
        make_run(root / str(i), lr=lr, curve=curve, wall_time_s=12.0 + i, train_samples_per_s=300.0 + i,
                 metrics={"test/acc": 0.55 + i / 10, "val/acc_best": 0.6 + i / 10, "test/loss": 1.3})
    return root


def accumulator(path: Path) -> EventAccumulator:
    return EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0}).Reload()


def hparams_read_back(run_dir: Path) -> tuple[api_pb2.Experiment, dict]:
    """The experiment and the session's hparam values of one run's folder in the dashboard's log directory."""
    content = accumulator(run_dir).PluginTagToContent(metadata.PLUGIN_NAME)
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    values = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    return experiment, values


def test_events_from_metrics_csv_hold_the_same_values(tmp_path):
    sweep = make_sweep(tmp_path / "sweep")
    logdir = tmp_path / "logdir"
    assert sync(logdir, load_runs([str(sweep)])) == ["0", "1", "2"]
    acc = accumulator(logdir / "2")
    scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    # rows of one step are merged; every CSV value is there at its step, the epoch too
    assert scalars["train/loss"] == [(9, 2.0), (19, 1.5)]
    assert scalars["train/acc"] == [(9, pytest.approx(0.45)), (19, pytest.approx(0.7))]
    assert scalars["val/acc"] == [(9, pytest.approx(0.5)), (19, pytest.approx(0.8))]
    assert scalars["test/acc"] == [(20, pytest.approx(0.75))]
    assert scalars["epoch"] == [(9, 0.0), (19, 1.0), (20, 1.0)]
    # final metrics of results.json that are not curves, at the last step (test/acc stays the logged one)
    assert scalars["val/acc_best"] == [(20, pytest.approx(0.8))]
    assert scalars["params"] == [(20, 1000.0)] and scalars["wall_time_s"] == [(20, 14.0)]
    assert scalars["train_samples_per_s"] == [(20, 302.0)]
    assert set(scalars) == {"epoch", "train/loss", "train/acc", "val/acc", "val/loss", "test/acc", "test/loss",
                            "val/acc_best", "params", "wall_time_s", "train_samples_per_s"}
    assert (sweep / "2" / "csv" / "metrics.csv").read_text().count("\n") == len(CURVE) + 1  # the CSV untouched


def test_hparams_hold_the_differing_keys_status_and_final_metrics(tmp_path):
    sweep = make_sweep(tmp_path / "sweep")
    make_run(sweep / "3", lr=1e-2, seed=2, status="failed", error="RuntimeError: boom")
    logdir = tmp_path / "logdir"
    sync(logdir, load_runs([str(sweep)]))
    experiment, values = hparams_read_back(logdir / "1")
    columns = {h.name: h for h in experiment.hparam_infos}
    assert list(columns) == ["status", "seed", "optimizer.lr", "model", "task"]  # differing keys, then ALWAYS
    assert columns["optimizer.lr"].type == api_pb2.DATA_TYPE_FLOAT64 and columns["optimizer.lr"].differs
    assert (columns["optimizer.lr"].domain_interval.min_value, columns["optimizer.lr"].domain_interval.max_value) \
        == (1e-3, 1e-2)
    assert list(columns["status"].domain_discrete) == ["completed", "failed"]
    assert list(columns["model"].domain_discrete) == ["s4"] and not columns["model"].differs
    assert [m.name.tag for m in experiment.metric_infos] == ["test/acc", "val/acc_best", "test/loss", "params",
                                                              "wall_time_s", "train_samples_per_s"]
    assert values == {"status": "completed", "seed": 1.0, "optimizer.lr": 3e-3, "model": "s4", "task": "copy"}
    assert hparams_read_back(logdir / "3")[1] == {"status": "failed", "seed": 2.0, "optimizer.lr": 1e-2,
                                                  "model": "s4", "task": "copy"}
    assert [s.value for s in accumulator(logdir / "3").Scalars("params")] == [1000.0]  # no curves: results only


def test_sync_rewrites_what_changed_and_forgets_what_is_gone(tmp_path):
    sweep = make_sweep(tmp_path / "sweep")
    logdir = tmp_path / "logdir"
    forgotten = []
    assert sync(logdir, load_runs([str(sweep)]), forgotten.extend) == ["0", "1", "2"] and forgotten == []
    assert sync(logdir, load_runs([str(sweep)]), forgotten.extend) == []  # unchanged: nothing rewritten
    with (sweep / "1" / "csv" / "metrics.csv").open("a") as f:
        f.write("2,29,,,,,0.9,\n")  # a running run logs a row
    assert sync(logdir, load_runs([str(sweep)]), forgotten.extend) == ["1"] and forgotten == ["1"]
    assert [(e.step, e.value) for e in accumulator(logdir / "1").Scalars("val/acc")][-1] == (29, pytest.approx(0.9))
    make_run(sweep / "3", lr=1e-2, model="lru", metrics={"test/acc": 0.1})  # model now differs: every run rewritten
    assert sync(logdir, load_runs([str(sweep)]), forgotten.extend) == ["0", "1", "2", "3"]
    assert "model" in [h.name for h in hparams_read_back(logdir / "0")[0].hparam_infos][:3]
    shutil.rmtree(sweep / "0")
    forgotten.clear()
    assert sync(logdir, load_runs([str(sweep)]), forgotten.extend) == ["0", "1", "2", "3"] and "0" in forgotten
    assert sorted(p.name for p in logdir.iterdir()) == ["1", "2", "3", "state.json"]
    assert len(list((logdir / "1").glob("events.out.tfevents.*"))) == 1


def test_a_run_logged_to_tensorboard_only_keeps_its_curves_without_lightnings_hparams(tmp_path):
    run = make_run(tmp_path / "sweep" / "0", metrics={"test/acc": 0.7})
    (run / "tensorboard").mkdir()
    lightning_hparams = summary_pb2.Summary(value=[summary_pb2.Summary.Value(
        tag=metadata.SESSION_START_INFO_TAG, metadata=summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME)))])
    with (run / "tensorboard" / "events.out.tfevents.1.host").open("wb") as f:
        writer = RecordWriter(f)
        for step, summary in [(0, lightning_hparams)] + [
                (s, summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=t, simple_value=v)]))
                for s, t, v in [(0, "hp_metric", -1.0), (5, "train/loss", 2.5), (10, "train/loss", 1.5),
                                (10, "test/acc", 0.7)]]:
            writer.write(event_pb2.Event(step=step, wall_time=100.0 + step, summary=summary).SerializeToString())
    logdir = tmp_path / "logdir"
    sync(logdir, load_runs([str(run.parent)]))
    acc = accumulator(logdir / "0")
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(5, 2.5), (10, 1.5)]
    assert [(e.step, e.value) for e in acc.Scalars("params")] == [(10, 1000.0)]
    assert "hp_metric" not in acc.Tags()["scalars"]
    assert hparams_read_back(logdir / "0")[1]["status"] == "completed"  # the dashboard's session, not Lightning's


def test_optuna_studies_are_found_and_lr_wd_keeps_its_study_in_the_sweep_dir(tmp_path):
    sweep = tmp_path / "sweep"
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("config", ["sweep=lr_wd", f"hydra.sweep.dir={sweep}"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    assert instantiate(cfg.hydra.sweeper.storage) == f"sqlite:///{sweep}/optuna.db" and sweep.is_dir()
    with sqlite3.connect(sweep / "optuna.db") as db:
        db.execute("CREATE TABLE studies (study_id INTEGER)")
    with sqlite3.connect(sweep / "other.db") as db:
        db.execute("CREATE TABLE things (x INTEGER)")
    (sweep / "notes.db").write_text("not sqlite")
    (study,) = find_studies([sweep, tmp_path])
    assert study == (sweep / "optuna.db").resolve()
    assert dashboard_command(study) == f"optuna-dashboard sqlite:///{sweep.resolve()}/optuna.db"


def test_help_says_it_binds_localhost_and_bad_arguments_are_one_line(tmp_path, capsys):
    dashboard(["--help"])
    assert "default 127.0.0.1: only this machine can connect" in " ".join(capsys.readouterr().out.split())
    proc = run_cli("dashboard", str(tmp_path / "nothing"))
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "no such run directory" in proc.stderr


def test_the_log_directory_is_per_selection_in_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert logdir_for([a, b]) == logdir_for([b, a]) != logdir_for([a])
    assert logdir_for([a]).parent == tmp_path / "cache" / "ssmbench" / "dashboard"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_port_in_use_is_a_one_line_error_suggesting_port(tmp_path):
    sweep = make_sweep(tmp_path / "sweep")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
        proc = subprocess.run([sys.executable, "-m", "ssmbench", "dashboard", str(sweep), "--port", str(port)],
                              cwd=REPO_ROOT, env={**cli_env(), **env}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"error: dashboard: port {port} is in use (another dashboard or TensorBoard?); " \
                                  f"choose another with --port, e.g. --port {port + 1}"


class Server:
    """`ssmbench dashboard` in a subprocess on a free port, its cache under `tmp`."""

    def __init__(self, paths: list[Path], tmp: Path, refresh_s: float = 0.5):
        self.port = free_port()
        env = {**cli_env(), "XDG_CACHE_HOME": str(tmp / "cache")}
        started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "ssmbench", "dashboard", *map(str, paths), "--port",
                                      str(self.port), "--refresh", str(refresh_s)], cwd=REPO_ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.banner = self.proc.stdout.readline()
        self.start_s = time.monotonic() - started
        self.url = f"http://127.0.0.1:{self.port}/"
        assert self.url in self.banner, (self.banner, self.proc.stderr.read() if self.proc.poll() is not None else "")

    def get(self, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def stop(self) -> tuple[int, float, str]:
        """SIGINT (Ctrl-C); the exit code, the seconds it took and what it wrote to stderr."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=15)
        return code, time.monotonic() - started, self.proc.stderr.read()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def session_groups(server: Server) -> dict:
    body = {"experimentName": "", "startIndex": 0, "sliceSize": 100, "colParams": [],
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]}
    groups = server.get("data/plugin/hparams/session_groups", body)["sessionGroups"]
    return {g["name"]: {"hparams": g["hparams"], "metrics": {m["name"]["tag"]: m["value"] for m in g["metricValues"]}}
            for g in groups}


@pytest.mark.slow
def test_server_shows_every_run_its_lr_and_test_acc_picks_up_new_runs_and_stops_on_ctrl_c(tmp_path):
    """Measured: the server prints its URL 1.5-2.0 s after the command starts and exits 0 within 0.4 s of
    SIGINT (2-core CPU machine, 4 runs, cold cache)."""
    sweep = make_sweep(tmp_path / "sweep")
    server = Server([sweep], tmp_path)
    try:
        assert server.start_s < 20
        assert sorted(server.get("data/runs")) == ["0", "1", "2"]
        experiment = server.get("data/plugin/hparams/experiment", {"experimentName": ""})
        assert {"optimizer.lr", "status"} <= {h["name"] for h in experiment["hparamInfos"]}
        assert "test/acc" in [m["name"]["tag"] for m in experiment["metricInfos"]]
        groups = session_groups(server)
        assert {name: (g["hparams"]["optimizer.lr"], g["hparams"]["status"], g["metrics"]["test/acc"])
                for name, g in groups.items()} == {
            "0": (1e-3, "completed", pytest.approx(0.55)), "1": (3e-3, "completed", pytest.approx(0.65)),
            "2": (1e-2, "completed", pytest.approx(0.75))}
        curve = server.get("data/plugin/scalars/scalars?run=1&tag=val/acc")
        assert [(step, value) for _, step, value in curve] == [(9, pytest.approx(0.4)), (19, pytest.approx(0.7))]

        make_run(sweep / "3", lr=3e-2, status="running", metrics={"test/acc": 0.2})
        deadline = time.monotonic() + 10
        while "3" not in server.get("data/runs") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert session_groups(server)["3"]["hparams"]["status"] in ("running", "died")
        record = json.loads((sweep / "3" / "results.json").read_text())
        (sweep / "3" / "results.json").write_text(json.dumps({**record, "status": "completed"}))
        deadline = time.monotonic() + 10
        while session_groups(server)["3"]["hparams"]["status"] != "completed" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert session_groups(server)["3"]["hparams"]["status"] == "completed"
    finally:
        code, seconds, stderr = server.stop() if server.proc.poll() is None else (server.proc.returncode, 0, "")
        server.kill()
    assert code == 0 and seconds < 5, stderr
    assert "Traceback" not in stderr


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Every text of the page, shadow roots included (TensorBoard's dashboards are web components).
PAGE_TEXT = """(() => { const out = []; const walk = n => { if (n.nodeName === 'STYLE' || n.nodeName === 'SCRIPT') return;
  if (n.nodeType === 3 && n.textContent.trim()) out.push(n.textContent.trim());
  if (n.shadowRoot) walk(n.shadowRoot); for (const c of n.childNodes) walk(c); }; walk(document.body);
  return out.join(' '); })()"""


async def browse(chromium: str, url: str, until: list[str], screenshot: Path, timeout_s: float = 20.0) -> str:
    """Open `url` in headless `chromium` (DevTools protocol), wait until its text holds every string of `until`,
    save a screenshot; returns the page text."""
    import aiohttp

    profile = screenshot.parent / "chromium-profile"
    browser = await asyncio.create_subprocess_exec(
        chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
        f"--user-data-dir={profile}", "--window-size=1500,900", "about:blank",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        while b"DevTools listening on" not in (line := await asyncio.wait_for(browser.stderr.readline(), 20)):
            assert line, "chromium exited before opening its DevTools port"
        devtools = line.decode().split("ws://")[1].split("/")[0]
        async with aiohttp.ClientSession() as http:
            pages = await (await http.get(f"http://{devtools}/json/list")).json()
            page = next(p for p in pages if p["type"] == "page")
            async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                ids = iter(range(1, 10**6))

                async def call(method: str, **params):
                    i = next(ids)
                    await ws.send_json({"id": i, "method": method, "params": params})
                    while (msg := await ws.receive_json()).get("id") != i:
                        pass
                    return msg["result"]

                await call("Page.navigate", url=url)
                deadline = time.monotonic() + timeout_s
                text = ""
                while time.monotonic() < deadline:
                    text = (await call("Runtime.evaluate", expression=PAGE_TEXT))["result"].get("value", "")
                    if all(s in text for s in until):
                        break
                    await asyncio.sleep(0.3)
                await asyncio.sleep(0.5)  # let the table finish rendering before the picture
                shot = await call("Page.captureScreenshot", format="png")
                screenshot.write_bytes(base64.b64decode(shot["data"]))
                return text
    finally:
        browser.kill()
        await browser.wait()


ROWS = ("0 0.0010000 s4 1.0000 completed copy 0.55000", "1 0.0030000 s4 1.0000 completed copy 0.65000",
        "2 0.010000 s4 1.0000 completed copy 0.75000")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH: the headless browser check of the HParams table "
                                              "needs it (Debian: apt-get install chromium)")
def test_hparams_table_lists_the_runs_in_a_headless_browser(tmp_path):
    """The HParams dashboard (URL fragment #hparams) in headless chromium lists the 3 runs with their lr;
    the screenshot is left in the test's tmp dir (dashboard.png)."""
    pytest.importorskip("aiohttp")
    sweep = make_sweep(tmp_path / "sweep")
    server = Server([sweep], tmp_path)
    try:
        text = asyncio.run(browse(CHROMIUM, server.url + "#hparams", list(ROWS), tmp_path / "dashboard.png"))
    finally:
        code, _, stderr = server.stop()
        server.kill()
    assert code == 0, stderr
    table = text[text.index("Trial ID"):]
    for row in ROWS:  # run, lr, model, seed, status, task, test/acc as the table shows them (TensorBoard's format)
        assert row in table, table[:2000]
    assert (tmp_path / "dashboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
