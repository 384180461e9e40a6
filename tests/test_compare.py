"""`ssmbench compare` on hand-made run directories with known numbers (no training; in-process)."""

import csv
import io
import json
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ssmbench.compare import compare
from ssmbench.compare.runs import effective_status, load_runs
from ssmbench.compare.table import compare_runs
from ssmbench.errors import UserError
from tests.helpers import run_cli


def make_run(path: Path, *, model="s4", seed=1, lr=1e-3, status="completed", metrics=None, curve=None,
             error=None, overrides=None, results=True, **fields) -> Path:
    """A run directory as `ssmbench train` leaves it: .hydra/{config,hydra,overrides}.yaml, results.json,
    csv/metrics.csv. `curve` is a list of (epoch, step, {metric: value}) rows."""
    (path / ".hydra").mkdir(parents=True)
    config = {
        "seed": seed,
        "task": {"name": "copy", "seed": "${seed}", "n_classes": 10},
        "model": {"name": model, "d_model": 64, "n_classes": "${task.n_classes}"},
        "optimizer": {"lr": lr, "weight_decay": 0.01},
        "trainer": {"max_epochs": 2, "default_root_dir": "${paths.output_dir}"},
        "paths": {"output_dir": "${hydra:runtime.output_dir}", "data_dir": "./data"},
        "logger": [{"csv": {"save_dir": "${paths.output_dir}"}}],
    }
    OmegaConf.save(OmegaConf.create(config), path / ".hydra" / "config.yaml")
    choices = {"model": model, "task": "copy", "trainer": "default", "hydra/launcher": "basic"}
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"choices": choices}}}), path / ".hydra" / "hydra.yaml")
    overrides = overrides if overrides is not None else [f"model={model}", f"seed={seed}", f"optimizer.lr={lr}"]
    OmegaConf.save(OmegaConf.create(overrides), path / ".hydra" / "overrides.yaml")
    if results:
        record = {"status": status, "model": model, "task": "copy", "seed": seed, "params": 1000, **fields}
        if metrics is not None:
            record["metrics"] = metrics
        if error:
            record["error"] = error
        (path / "results.json").write_text(json.dumps(record))
    if curve:
        names = sorted({k for _, _, row in curve for k in row})
        (path / "csv").mkdir()
        with (path / "csv" / "metrics.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["epoch", "step", *names])
            for epoch, step, row in curve:
                writer.writerow([epoch, step, *(row.get(n, "") for n in names)])
    return path


def run_compare(capsys, *args) -> str:
    compare([*map(str, args)])
    return capsys.readouterr().out


@pytest.fixture
def seeds_sweep(tmp_path) -> Path:
    """s4 over 3 seeds (test/acc 0.5, 0.6, 0.7), lru over 3 seeds of which one crashed (0.8, 0.9)."""
    sweep = tmp_path / "sweep"
    job = 0
    for model, accs in (("s4", [0.5, 0.6, 0.7]), ("lru", [0.8, 0.9, None])):
        for seed, acc in enumerate(accs, start=1):
            if acc is None:
                make_run(sweep / str(job), model=model, seed=seed, status="failed", error="RuntimeError: CUDA out of memory")
            else:
                make_run(sweep / str(job), model=model, seed=seed, wall_time_s=10.0 * seed,
                         metrics={"test/acc": acc, "val/acc_best": acc + 0.01, "test/loss": 1.0 - acc})
            job += 1
    return sweep


def test_group_by_mean_std_and_count_on_known_numbers(seeds_sweep, capsys):
    data = json.loads(run_compare(capsys, seeds_sweep, "--group-by", "model", "--format", "json"))
    assert data["keys"] == ["model"] and data["sort"] == "test/acc"
    lru, s4 = data["groups"]  # sorted by mean test/acc, descending
    assert s4["group"] == {"model": "s4"} and s4["runs"] == 3 and s4["status"] == {"completed": 3}
    assert s4["metrics"]["test/acc"]["mean"] == pytest.approx(0.6, abs=1e-12)
    assert s4["metrics"]["test/acc"]["std"] == pytest.approx(0.1, abs=1e-12)  # sample std of 0.5, 0.6, 0.7
    assert s4["metrics"]["test/acc"]["n"] == 3
    assert s4["metrics"]["wall_time_s"]["mean"] == pytest.approx(20.0)
    assert lru["group"] == {"model": "lru"} and lru["runs"] == 3 and lru["status"] == {"completed": 2, "failed": 1}
    assert lru["metrics"]["test/acc"]["mean"] == pytest.approx(0.85, abs=1e-12)
    assert lru["metrics"]["test/acc"]["std"] == pytest.approx(math.sqrt(0.005), abs=1e-12)
    assert lru["metrics"]["test/acc"]["n"] == 2
    assert lru["metrics"]["test/loss"]["mean"] == pytest.approx(0.15, abs=1e-12)

    table = run_compare(capsys, seeds_sweep, "--group-by", "model")
    lines = {line.split()[1]: line for line in table.splitlines() if line.split()[1:2] in (["s4"], ["lru"])}
    assert "0.6000 ± 0.1000" in lines["s4"] and "3 completed" in lines["s4"]
    assert "0.8500 ± 0.0707" in lines["lru"] and "2 completed, 1 failed" in lines["lru"]

    rows = list(csv.DictReader(io.StringIO(run_compare(capsys, seeds_sweep, "--group-by", "model", "--format", "csv"))))
    assert [r["model"] for r in rows] == ["lru", "s4"]
    assert float(rows[1]["test/acc_mean"]) == pytest.approx(0.6) and float(rows[1]["test/acc_std"]) == pytest.approx(0.1)
    assert rows[0]["test/acc_n"] == "2"


def test_group_by_two_keys_single_runs_have_no_std(seeds_sweep, capsys):
    data = json.loads(run_compare(capsys, seeds_sweep, "--group-by", "model,seed", "--format", "json"))
    assert len(data["groups"]) == 6
    one = next(g for g in data["groups"] if g["group"] == {"model": "s4", "seed": 2})
    assert one["metrics"]["test/acc"] == {"mean": 0.6, "std": None, "n": 1}
    crashed = next(g for g in data["groups"] if g["group"] == {"model": "lru", "seed": 3})
    assert crashed["status"] == {"failed": 1} and crashed["metrics"]["test/acc"]["n"] == 0
    assert data["groups"][-1] is not None and data["groups"][-1]["group"] == {"model": "lru", "seed": 3}


@pytest.fixture
def mixed_runs(tmp_path) -> Path:
    root = tmp_path / "runs"
    make_run(root / "a", lr=1e-3, metrics={"test/acc": 0.61, "val/acc_best": 0.62},
             curve=[(0, 9, {"val/acc": 0.3}), (1, 19, {"val/acc": 0.62})])
    make_run(root / "b", lr=3e-3, metrics={"test/acc": 0.74, "val/acc_best": 0.75},
             curve=[(0, 9, {"val/acc": 0.5}), (1, 19, {"val/acc": 0.75})])
    make_run(root / "c", lr=1e-2, status="failed", error="FloatingPointError: loss is nan at step 7")
    make_run(root / "d", lr=3e-2, status="running", curve=[(0, 9, {"val/acc": 0.42, "train/loss": 1.5})])
    make_run(root / "e", lr=1e-1, results=False)
    return root


def test_table_shows_differing_keys_and_every_run_with_its_status(mixed_runs, capsys):
    out = run_compare(capsys, mixed_runs)
    header = next(line for line in out.splitlines() if " run " in line)
    assert "optimizer.lr" in header and "test/acc" in header and "val/acc_best" in header
    for same in ("seed", "model", "task.seed", "model.n_classes", "paths.", "default_root_dir", "weight_decay"):
        assert same not in header, same
    rows = {line.split()[1]: line for line in out.splitlines() if line.split()[1:2] and line.split()[1] in "abcde"}
    assert set(rows) == {"a", "b", "c", "d", "e"}
    assert "completed" in rows["a"] and "0.6100" in rows["a"] and "0.001" in rows["a"]
    assert "failed: FloatingPointError: loss is nan at step 7" in rows["c"]
    assert "running (" in rows["d"] and "0.4200*" not in rows["d"]  # val/acc is not a default column
    assert "1,000" in rows["d"] and "1,000*" not in rows["d"]  # params come from results.json, not the CSV
    assert "missing: no results.json" in rows["e"]
    order = [line.split()[1] for line in out.splitlines() if line.split()[1:2] and line.split()[1] in "abcde"]
    assert order[:2] == ["b", "a"]  # sorted by test/acc, runs without it last

    out = run_compare(capsys, mixed_runs, "--metrics", "val/acc,train/loss")
    running = next(line for line in out.splitlines() if line.split()[1:2] == ["d"])
    assert "0.4200*" in running and "1.5000*" in running and "last logged value of an unfinished run" in out


def test_json_round_trips_and_matches_results(mixed_runs, capsys):
    text = run_compare(capsys, mixed_runs, "--format", "json", "--metrics", "test/acc,val/acc_best,params")
    data = json.loads(text)
    expected = compare_runs(load_runs([str(mixed_runs)]), metrics=["test/acc", "val/acc_best", "params"])
    assert data["runs"] == expected.runs and data["keys"] == expected.keys == ["optimizer.lr"]
    assert json.loads(json.dumps(data)) == data
    by_name = {r["run"]: r for r in data["runs"]}
    for name in ("a", "b"):
        stored = json.loads((mixed_runs / name / "results.json").read_text())
        assert by_name[name]["metrics"]["test/acc"] == stored["metrics"]["test/acc"]
        assert by_name[name]["metrics"]["params"] == stored["params"]
        assert by_name[name]["config"]["optimizer.lr"] == OmegaConf.load(mixed_runs / name / ".hydra" / "config.yaml").optimizer.lr
    assert by_name["c"]["status"] == "failed" and by_name["c"]["error"].startswith("FloatingPointError")
    assert by_name["d"]["status"] == "running" and by_name["e"]["status"] == "missing"
    assert by_name["d"]["partial"] == [] and by_name["d"]["metrics"]["test/acc"] is None
    data = json.loads(run_compare(capsys, mixed_runs, "--format", "json", "--metrics", "val/acc,train/loss"))
    running = next(r for r in data["runs"] if r["run"] == "d")
    assert running["partial"] == ["train/loss", "val/acc"] and running["metrics"] == {"val/acc": 0.42, "train/loss": 1.5}


def test_csv_keeps_full_precision_and_markdown_is_a_table(mixed_runs, capsys):
    rows = list(csv.DictReader(io.StringIO(run_compare(capsys, mixed_runs, "--format", "csv"))))
    assert [r["run"] for r in rows][:2] == ["b", "a"]
    assert float(rows[0]["test/acc"]) == 0.74 and float(rows[0]["optimizer.lr"]) == 3e-3
    assert rows[2]["status"] in ("failed", "running", "missing") and rows[2]["test/acc"] == ""

    md = run_compare(capsys, mixed_runs, "--format", "markdown").strip().splitlines()
    assert md[0].startswith("| run | status | optimizer.lr | test/acc |")
    assert set(md[1]) <= set("|:-") and md[1].count("|") == md[0].count("|")
    assert len([line for line in md if line.startswith("| ")]) == 6  # header + 5 runs
    assert any("| c | failed: FloatingPointError" in line for line in md)


def test_sort_by_a_config_key_ascending_and_keys_forced(mixed_runs, capsys):
    data = json.loads(run_compare(capsys, mixed_runs, "--sort", "optimizer.lr", "--ascending", "--keys", "seed",
                                  "--format", "json"))
    assert [r["run"] for r in data["runs"]] == ["a", "b", "c", "d", "e"]
    assert data["keys"] == ["optimizer.lr", "seed"] and all(r["config"]["seed"] == 1 for r in data["runs"])
    data = json.loads(run_compare(capsys, mixed_runs, "--sort", "val/acc_best", "--ascending", "--format", "json"))
    assert [r["run"] for r in data["runs"]][:2] == ["a", "b"]


def test_paths_globs_and_single_run(mixed_runs, seeds_sweep, capsys):
    data = json.loads(run_compare(capsys, f"{mixed_runs}/[ab]", "--format", "json"))
    assert [r["run"] for r in data["runs"]] == ["b", "a"]
    data = json.loads(run_compare(capsys, mixed_runs / "a", "--format", "json"))
    assert [r["run"] for r in data["runs"]] == ["a"] and data["runs"][0]["metrics"]["test/acc"] == 0.61
    data = json.loads(run_compare(capsys, mixed_runs.parent, "--format", "json", "--sort", "run", "--ascending"))
    assert len(data["runs"]) == 11 and "runs/a" in [r["run"] for r in data["runs"]]
    assert [r["run"] for r in data["runs"]][5:8] == ["sweep/0", "sweep/1", "sweep/2"]


def test_plot_writes_a_png_per_run_and_per_group(mixed_runs, seeds_sweep, tmp_path, capsys):
    import matplotlib.image

    out = tmp_path / "plots" / "curves.png"
    run_compare(capsys, mixed_runs, "--plot", out)
    assert "wrote" in capsys.readouterr().err or out.is_file()
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(out)
    assert image.shape[:2] == (600, 960) and image[..., :3].std() > 0.01  # 8x5 in at 120 dpi, not blank

    for job, accs in enumerate(([0.2, 0.5], [0.3, 0.6], [0.25, 0.55], [0.6, 0.8], [0.7, 0.9])):
        curve = [(0, 9, {"val/acc": accs[0]}), (1, 19, {"val/acc": accs[1]})]
        (seeds_sweep / str(job) / "csv").mkdir()
        with (seeds_sweep / str(job) / "csv" / "metrics.csv").open("w") as f:
            f.write("epoch,step,val/acc\n" + "".join(f"{e},{s},{r['val/acc']}\n" for e, s, r in curve))
    grouped = tmp_path / "grouped.png"
    run_compare(capsys, seeds_sweep, "--group-by", "model", "--plot", grouped, "--format", "csv")
    assert grouped.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from ssmbench.compare.plot import curve_groups

    groups = curve_groups(load_runs([str(seeds_sweep)]), "val/acc", ["model"])
    assert {k: len(v) for k, v in groups.items()} == {"model=s4": 3, "model=lru": 2}
    assert statistics.fmean(ys[1] for _, _, ys in groups["model=s4"]) == pytest.approx(0.55)


@pytest.mark.parametrize(
    "args, message",
    [
        (["/nonexistent/run"], "no such run directory: /nonexistent/run"),
        (["{empty}"], "no runs found under"),
        (["{runs}", "--group-by", "nope"], "--group-by nope: no run has this key"),
        (["{runs}", "--sort", "nope"], "--sort nope: not a column"),
        (["{runs}", "--format", "xml"], "invalid choice: 'xml'"),
        (["{runs}", "--plot", "{tmp}/x.png", "--plot-metric", "val/nope"], "--plot: no run logged val/nope"),
    ],
)
def test_user_errors_are_one_clear_line(mixed_runs, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    args = [a.format(empty=tmp_path / "empty", runs=mixed_runs, tmp=tmp_path) for a in args]
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace("*", r"\*")):
        compare(args)


def test_cli_dispatches_compare(mixed_runs, capsys):
    from ssmbench.cli import main

    main(["compare", str(mixed_runs), "--format", "json"])
    assert len(json.loads(capsys.readouterr().out)["runs"]) == 5
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", str(mixed_runs / "nope")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: no such run directory" in err and "Traceback" not in err
    main(["compare", "--help"])
    assert "--group-by" in capsys.readouterr().out


HOST = socket.gethostname()
ELSEWHERE = HOST + "-elsewhere"


def dead_pid() -> int:
    """The id of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def beating(pid: int, host: str, heartbeat: float, interval: float = 30.0) -> dict:
    """results.json fields of a run that says it is running, as `ssmbench train` writes them."""
    return {"status": "running", "pid": pid, "host": host, "heartbeat": heartbeat, "heartbeat_interval_s": interval}


def test_a_running_run_is_running_only_while_its_process_and_heartbeat_live():
    now = time.time()
    assert effective_status(beating(os.getpid(), HOST, now - 5)) == "running"
    assert effective_status(beating(dead_pid(), HOST, now - 5)) == "died"  # fresh heartbeat, process gone
    assert effective_status(beating(1, HOST, now - 5)) == "running"  # another user's process (or ours, as root)
    assert effective_status(beating(dead_pid(), ELSEWHERE, now - 5)) == "running"  # not this machine's pid
    assert effective_status(beating(os.getpid(), ELSEWHERE, now - 3600)) == "died"
    assert effective_status(beating(dead_pid(), "node7", now - 5), host="node7") == "died"
    # stale after max(5 * heartbeat_interval_s, 120) seconds
    assert effective_status(beating(7, ELSEWHERE, now - 149), now=now) == "running"
    assert effective_status(beating(7, ELSEWHERE, now - 151), now=now) == "died"
    assert effective_status(beating(7, ELSEWHERE, now - 119, interval=10.0), now=now) == "running"
    assert effective_status(beating(7, ELSEWHERE, now - 121, interval=10.0), now=now) == "died"
    # results.json of older versions (no pid, no heartbeat): running while its files changed within the hour
    assert effective_status({"status": "running"}, now=now, updated=now - 3500) == "running"
    assert effective_status({"status": "running"}, now=now, updated=now - 3700) == "died"
    assert effective_status({"status": "running"}) == "running"  # no modification time given: cannot tell
    for status in ("completed", "failed", "interrupted", "preempted", "died"):
        assert effective_status({**beating(dead_pid(), HOST, 0.0), "status": status}) == status


@pytest.fixture
def live_and_dead_runs(tmp_path) -> Path:
    """Runs whose results.json says running: alive (this process, fresh heartbeat), killed (its process is gone),
    lost (another machine, heartbeat 12 minutes old), remote (another machine, fresh heartbeat), legacy (no
    heartbeat, files 2 hours old); and a preempted and an interrupted run."""
    root, now = tmp_path / "live", time.time()
    curve = [(0, 9, {"val/acc": 0.42})]
    make_run(root / "alive", lr=1e-3, curve=curve, **beating(os.getpid(), HOST, now - 5))
    make_run(root / "killed", lr=2e-3, curve=curve, **beating(dead_pid(), HOST, now - 5))
    make_run(root / "lost", lr=3e-3, curve=curve, **beating(os.getpid(), ELSEWHERE, now - 720))
    make_run(root / "remote", lr=4e-3, curve=curve, **beating(dead_pid(), ELSEWHERE, now - 5))
    legacy = make_run(root / "legacy", lr=5e-3, status="running", curve=curve)
    for f in (legacy / "results.json", legacy / "csv" / "metrics.csv"):
        os.utime(f, (now - 7200, now - 7200))
    make_run(root / "preempted", lr=6e-3, status="preempted", error="preempted by SLURM (SIGTERM)")
    make_run(root / "interrupted", lr=7e-3, status="interrupted", error="KeyboardInterrupt")
    return root


def test_compare_shows_runs_that_stopped_without_saying_so_as_died(live_and_dead_runs, capsys):
    proc = run_cli("compare", str(live_and_dead_runs), "--metrics", "val/acc", timeout=120)
    assert proc.returncode == 0, proc.stderr
    names = {"alive", "killed", "lost", "remote", "legacy", "preempted", "interrupted"}
    rows = {line.split()[1]: line for line in proc.stdout.splitlines() if set(line.split()[1:2]) & names}
    assert set(rows) == names
    assert re.search(r"running \(\d+s ago\)", rows["alive"]) and re.search(r"running \(\d+s ago\)", rows["remote"])
    assert re.search(r"died \(\d+s ago\)", rows["killed"])
    assert "died (12m ago)" in rows["lost"] and "died (2h ago)" in rows["legacy"]
    for name in ("alive", "killed", "lost", "remote", "legacy"):
        assert "0.4200*" in rows[name], name  # last logged values, like any unfinished run
    assert "preempted: preempted by SLURM (SIGTERM)" in rows["preempted"]
    assert "interrupted: KeyboardInterrupt" in rows["interrupted"]
    assert "running" not in "".join(rows[n] for n in ("killed", "lost", "legacy", "preempted", "interrupted"))

    data = json.loads(run_compare(capsys, live_and_dead_runs, "--format", "json"))
    assert {r["run"]: r["status"] for r in data["runs"]} == {
        "alive": "running", "killed": "died", "lost": "died", "remote": "running", "legacy": "died",
        "preempted": "preempted", "interrupted": "interrupted"}
    (group,) = json.loads(run_compare(capsys, live_and_dead_runs, "--group-by", "model", "--format", "json"))["groups"]
    assert group["status"] == {"running": 2, "died": 3, "preempted": 1, "interrupted": 1}
    md = run_compare(capsys, live_and_dead_runs, "--format", "markdown")
    assert "| lost | died (12m ago) |" in md and "| legacy | died (2h ago) |" in md
    rows = {r["run"]: r for r in csv.DictReader(io.StringIO(run_compare(capsys, live_and_dead_runs, "--format", "csv")))}
    assert rows["killed"]["status"] == "died" and rows["alive"]["status"] == "running"
    by_status = json.loads(run_compare(capsys, live_and_dead_runs, "--group-by", "status", "--format", "json"))
    assert {g["group"]["status"]: g["runs"] for g in by_status["groups"]} == {
        "running": 2, "died": 3, "preempted": 1, "interrupted": 1}


def test_table_colours_died_preempted_and_interrupted_like_failures(live_and_dead_runs):
    from rich.console import Console

    from ssmbench.compare.render import render_rich

    console = Console(file=io.StringIO(), force_terminal=True, color_system="standard", width=400)
    render_rich(compare_runs(load_runs([str(live_and_dead_runs)])), console)
    lines = console.file.getvalue().splitlines()
    for status in ("died", "preempted", "interrupted"):
        assert any(re.search(r"\x1b\[[0-9;]*31m" + status, line) for line in lines), status  # red
    assert any(re.search(r"\x1b\[[0-9;]*33mrunning", line) for line in lines)  # yellow


def test_a_garbled_metrics_csv_row_is_read_without_its_extra_fields(tmp_path):
    """A row with more fields than the header (cut or garbled while written) and a short row do not stop reading."""
    from ssmbench.compare.runs import read_metrics_csv

    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,train/loss\n0,1,0.5\n0,2,0.4,7,8\n0,3\n")
    assert read_metrics_csv(path) == [{"epoch": 0.0, "step": 1.0, "train/loss": 0.5},
                                      {"epoch": 0.0, "step": 2.0, "train/loss": 0.4},
                                      {"epoch": 0.0, "step": 3.0}]
