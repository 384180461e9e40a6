"""`ssmbench compare --pivot ROW,COL` on hand-made run directories with known numbers (no training; in-process)."""

import csv
import io
import json
import statistics
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ssmbench.compare import compare
from ssmbench.compare.pivot import pivot_runs, render_pivot_csv, render_pivot_json, render_pivot_markdown
from ssmbench.compare.runs import load_runs
from ssmbench.errors import UserError

LRS = (1e-3, 1e-2)
# (model, task) -> lr -> (val/acc_best of seeds 1..3, test/acc of seeds 1..3); None: that seed failed.
# s4/copy: lr 1e-3 has the better validation mean but the worse test mean, so 1e-3 must be reported.
# lru/mqar: the chosen lr 1e-2 lost seed 3.
SWEEP = {
    ("s4", "copy"): {1e-3: ([0.90, 0.92, 0.94], [0.80, 0.82, 0.84]), 1e-2: ([0.85, 0.86, 0.87], [0.95, 0.96, 0.97])},
    ("s4", "mqar"): {1e-3: ([0.50, 0.60, 0.70], [0.45, 0.55, 0.65]), 1e-2: ([0.70, 0.80, 0.90], [0.72, 0.81, 0.93])},
    ("lru", "copy"): {1e-3: ([0.95, 0.96, 0.97], [0.91, 0.93, 0.98]), 1e-2: ([0.10, 0.20, 0.30], [0.10, 0.20, 0.30])},
    ("lru", "mqar"): {1e-3: ([0.60, 0.65, 0.70], [0.60, 0.62, 0.64]), 1e-2: ([0.88, 0.90, None], [0.85, 0.87, None])},
}
CHOSEN = {("s4", "copy"): 1e-3, ("s4", "mqar"): 1e-2, ("lru", "copy"): 1e-3, ("lru", "mqar"): 1e-2}


def make_run(path: Path, *, model: str, task: str, seed: int, lr: float, seq_len: int = 64, status="completed",
             metrics=None) -> Path:
    """A run directory as `ssmbench train` leaves it (.hydra/{config,hydra,overrides}.yaml, results.json)."""
    (path / ".hydra").mkdir(parents=True)
    config = {
        "seed": seed,
        "task": {"name": task, "seq_len": seq_len, "seed": "${seed}"},
        "model": {"name": model, "d_model": 64},
        "optimizer": {"lr": lr, "weight_decay": 0.01},
        "paths": {"output_dir": f"/runs/{path.name}"},
    }
    OmegaConf.save(OmegaConf.create(config), path / ".hydra" / "config.yaml")
    choices = {"model": model, "task": task, "optimizer": "adamw", "hydra/launcher": "basic"}
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"choices": choices}}}), path / ".hydra" / "hydra.yaml")
    overrides = [f"model={model}", f"task={task}", f"seed={seed}", f"optimizer.lr={lr}", f"task.seq_len={seq_len}"]
    OmegaConf.save(OmegaConf.create(overrides), path / ".hydra" / "overrides.yaml")
    record = {"status": status, "model": model, "task": task, "seed": seed}
    if metrics is not None:
        record["metrics"] = metrics
    (path / "results.json").write_text(json.dumps(record))
    return path


@pytest.fixture
def sweep(tmp_path) -> Path:
    """2 models x 2 tasks x 2 lrs x 3 seeds (SWEEP), one run directory each, numbered like a multirun."""
    root, job = tmp_path / "sweep", 0
    for (model, task), by_lr in SWEEP.items():
        for lr, (vals, tests) in by_lr.items():
            for seed, (val, test) in enumerate(zip(vals, tests), start=1):
                metrics = None if val is None else {"val/acc_best": val, "test/acc": test, "val/loss": 1 - val,
                                                    "test/loss": 1 - test}
                make_run(root / str(job), model=model, task=task, seed=seed, lr=lr, metrics=metrics,
                         status="completed" if metrics else "failed")
                job += 1
    return root


def chosen_tests(model: str, task: str) -> list[float]:
    return [t for t in SWEEP[(model, task)][CHOSEN[(model, task)]][1] if t is not None]


def test_each_cell_reports_the_lr_with_the_best_validation_mean(sweep):
    pivot = pivot_runs(load_runs([str(sweep)]), "model", "task")
    assert pivot.rows == ["lru", "s4"] and pivot.cols == ["copy", "mqar"]
    assert set(pivot.cells) == {(m, t) for m in ("lru", "s4") for t in ("copy", "mqar")}
    for (model, task), cell in pivot.cells.items():
        tests = chosen_tests(model, task)
        assert cell.setting == {"optimizer.lr": CHOSEN[(model, task)]}, (model, task)
        assert cell.mean == pytest.approx(statistics.mean(tests), abs=1e-12)
        assert cell.std == pytest.approx(statistics.stdev(tests), abs=1e-12)
        assert cell.n == len(tests)
        assert len(cell.runs) == 3 and {r.config["optimizer.lr"] for r in cell.runs} == {CHOSEN[(model, task)]}
    # s4/copy: lr 1e-2 has the better test mean (0.96) but the worse validation mean: not chosen
    assert pivot.cells[("s4", "copy")].mean == pytest.approx(0.82, abs=1e-12)
    assert pivot.cells[("lru", "mqar")].failed == 1 and pivot.cells[("lru", "mqar")].n == 2
    assert [c.failed for k, c in pivot.cells.items() if k != ("lru", "mqar")] == [0, 0, 0]
    # column best: lru on copy (0.94 vs 0.82) and on mqar (0.86 vs 0.82)
    assert {k for k, c in pivot.cells.items() if c.best_in_column} == {("lru", "copy"), ("lru", "mqar")}

    by_val_test = pivot_runs(load_runs([str(sweep)]), "model", "task", select_by="test/acc")
    assert by_val_test.cells[("s4", "copy")].setting == {"optimizer.lr": 1e-2}
    assert by_val_test.cells[("s4", "copy")].mean == pytest.approx(0.96, abs=1e-12)


def test_lower_is_better_flips_selection_and_bold(sweep):
    runs = load_runs([str(sweep)])
    low = pivot_runs(runs, "model", "task", metric="test/loss", select_by="val/loss", higher_is_better=False)
    for (model, task), cell in low.cells.items():
        assert cell.setting == {"optimizer.lr": CHOSEN[(model, task)]}
        assert cell.mean == pytest.approx(1 - statistics.mean(chosen_tests(model, task)), abs=1e-12)
    assert {k for k, c in low.cells.items() if c.best_in_column} == {("lru", "copy"), ("lru", "mqar")}
    # selecting the worst validation loss when higher is (wrongly) better picks the other lr everywhere
    high = pivot_runs(runs, "model", "task", metric="test/loss", select_by="val/loss")
    assert all(c.setting["optimizer.lr"] != CHOSEN[k] for k, c in high.cells.items())


def test_markdown_bolds_column_best_and_lists_chosen_settings(sweep, capsys):
    from ssmbench.cli import main

    main(["compare", str(sweep), "--pivot", "model,task", "--format", "markdown"])
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "| model \\ task | copy | mqar |" and lines[1] == "|:---|---:|---:|"
    assert lines[2] == "| lru | **0.940 ± 0.036** | **0.860 ± 0.014** (n=2, 1 failed) |"
    assert lines[3] == "| s4 | 0.820 ± 0.020 | 0.820 ± 0.105 |"
    assert "mean ± std over seeds (n=3 unless noted)" in out and "best mean val/acc_best" in out
    assert "- optimizer.lr = 0.001: lru/copy; s4/copy" in lines and "- optimizer.lr = 0.01: lru/mqar; s4/mqar" in lines
    assert render_pivot_markdown(pivot_runs(load_runs([str(sweep)]), "model", "task")) == out

    main(["compare", str(sweep), "--pivot", "model,task"])
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.split()[1:2] == ["s4"])
    assert "0.820 ± 0.020" in row and "0.820 ± 0.105" in row


def test_csv_and_json_round_trip_the_cells(sweep, capsys):
    pivot = pivot_runs(load_runs([str(sweep)]), "model", "task")
    rows = list(csv.DictReader(io.StringIO(render_pivot_csv(pivot))))
    assert list(rows[0]) == ["model", "task", "setting", "mean", "std", "n", "failed", "running", "best_in_column"]
    assert [(r["model"], r["task"]) for r in rows] == [("lru", "copy"), ("lru", "mqar"), ("s4", "copy"), ("s4", "mqar")]
    for r in rows:
        cell = pivot.cells[(r["model"], r["task"])]
        assert float(r["mean"]) == cell.mean and float(r["std"]) == cell.std  # full precision
        assert int(r["n"]) == cell.n and int(r["failed"]) == cell.failed
        assert r["best_in_column"] == str(cell.best_in_column)
        assert r["setting"] == f"optimizer.lr={CHOSEN[(r['model'], r['task'])]}"

    data = json.loads(run_compare(capsys, sweep, "--pivot", "model,task", "--format", "json"))
    assert json.loads(render_pivot_json(pivot)) == data
    assert data["rows"] == ["lru", "s4"] and data["cols"] == ["copy", "mqar"]
    assert (data["metric"], data["select_by"], data["higher_is_better"]) == ("test/acc", "val/acc_best", True)
    for record in data["cells"]:
        cell = pivot.cells[(record["row"], record["col"])]
        assert (record["mean"], record["std"], record["n"]) == (cell.mean, cell.std, cell.n)
        assert record["failed"] == cell.failed
        assert record["setting"] == {"optimizer.lr": CHOSEN[(record["row"], record["col"])]}
        assert record["best_in_column"] == cell.best_in_column and len(record["runs"]) == 3


def run_compare(capsys, *args) -> str:
    compare([*map(str, args)])
    return capsys.readouterr().out


def test_empty_and_failed_cells_ties_and_single_seeds(tmp_path, capsys):
    root = tmp_path / "runs"
    make_run(root / "0", model="s4", task="copy", seed=1, lr=1e-3, metrics={"val/acc_best": 0.9, "test/acc": 0.7})
    make_run(root / "1", model="lru", task="copy", seed=1, lr=1e-3, metrics={"val/acc_best": 0.8, "test/acc": 0.7})
    make_run(root / "2", model="s4", task="parity", seed=1, lr=1e-3, status="failed")
    make_run(root / "3", model="s4", task="parity", seed=2, lr=1e-3, status="interrupted")
    make_run(root / "4", model="s4", task="parity", seed=3, lr=1e-3, status="running")
    pivot = pivot_runs(load_runs([str(root)]), "model", "task")
    assert pivot.cells[("s4", "copy")].best_in_column and pivot.cells[("lru", "copy")].best_in_column  # a tie
    assert pivot.cells[("s4", "copy")].std is None and pivot.cells[("s4", "copy")].n == 1
    parity = pivot.cells[("s4", "parity")]
    assert (parity.mean, parity.n, parity.failed, parity.running, len(parity.runs)) == (None, 0, 2, 1, 3)
    nothing = pivot.cells[("lru", "parity")]
    assert (nothing.mean, nothing.failed, nothing.runs, nothing.best_in_column) == (None, 0, [], False)
    md = run_compare(capsys, root, "--pivot", "model,task", "--format", "markdown").splitlines()
    assert md[2] == "| lru | **0.700** | — |"
    assert md[3] == "| s4 | **0.700** | — (2 failed, 1 running) |"


def test_composite_keys_label_and_order_values_naturally(tmp_path, capsys):
    root, job = tmp_path / "runs", 0
    for seq_len in (128, 64, 1024):
        for seed in (1, 2):
            acc = 1.0 - seq_len / 2048 + seed / 100
            make_run(root / str(job), model="s4", task="mqar", seed=seed, lr=1e-3, seq_len=seq_len,
                     metrics={"val/acc_best": acc, "test/acc": acc})
            job += 1
    make_run(root / str(job), model="s10", task="mqar", seed=1, lr=1e-3, seq_len=64,
             metrics={"val/acc_best": 0.5, "test/acc": 0.5})
    (root / "no_config").mkdir()  # results.json only: model and task known, task.seq_len not
    (root / "no_config" / "results.json").write_text(json.dumps({"status": "failed", "model": "s4", "task": "mqar"}))
    pivot = pivot_runs(load_runs([str(root)]), "model", "task+task.seq_len")
    assert [r.name for r in pivot.left_out] == ["no_config"]
    assert pivot.rows == ["s4", "s10"]  # natural order: 4 before 10
    assert pivot.cols == [("mqar", 64), ("mqar", 128), ("mqar", 1024)]  # numbers numerically
    assert pivot.cells[("s4", ("mqar", 128))].mean == pytest.approx(1.0 - 128 / 2048 + 0.015, abs=1e-12)
    assert pivot.cells[("s10", ("mqar", 128))].mean is None
    md = run_compare(capsys, root, "--pivot", "model,task+task.seq_len", "--format", "markdown").splitlines()
    assert md[0] == "| model \\ task+task.seq_len | mqar, 64 | mqar, 128 | mqar, 1024 |"
    assert md[3] == "| s10 | 0.500 (n=1) | — | — |" and md[-1] == "1 run without model or task+task.seq_len left out"
    data = json.loads(run_compare(capsys, root, "--pivot", "model,task+task.seq_len", "--format", "json"))
    assert data["cols"] == [["mqar", 64], ["mqar", 128], ["mqar", 1024]]
    text = run_compare(capsys, root, "--pivot", "task.seq_len,model", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["task.seq_len"] for r in rows[::2]] == ["64", "128", "1024"] and rows[0]["model"] == "s4"


def test_heatmap_is_written(sweep, tmp_path, capsys):
    import matplotlib.image

    out = tmp_path / "plots" / "pivot.png"
    compare([str(sweep), "--pivot", "model,task", "--format", "csv", "--plot", str(out)])
    assert f"wrote {out}" in capsys.readouterr().err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(out)
    assert image.shape[:2] == (360, 636) and image[..., :3].std() > 0.05  # 5.3 x 3 in at 120 dpi, not blank


@pytest.mark.parametrize(
    "args, message",
    [
        (["--pivot", "model,task", "--group-by", "model"], "--group-by does not combine with --pivot"),
        (["--pivot", "model,nope"], "--pivot nope: no run has this key; pivot on a config-group choice or config "
                                    "key, e.g. model, task, optimizer, optimizer.lr"),
        (["--pivot", "model,task+nope"], "--pivot nope: no run has this key"),
        (["--pivot", "model"], "--pivot model: give two different keys ROW,COL"),
        (["--pivot", "model,task", "--metric", "test/nope"], "--metric test/nope: no completed run has it"),
        (["--pivot", "model,task", "--select-by", "val/nope"], "--select-by val/nope: no completed run of lru/copy"),
        (["--pivot", "model,task", "--metrics", "test/acc"], "--metrics does not combine with --pivot"),
        (["--metric", "test/acc"], "--metric applies only with --pivot ROW,COL"),
        (["--lower-is-better"], "--lower-is-better applies only with --pivot ROW,COL"),
    ],
)
def test_user_errors_are_one_clear_line(sweep, args, message):
    with pytest.raises(UserError) as info:
        compare([str(sweep), *args])
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_cli_reports_a_bad_pivot_in_one_line(sweep, capsys):
    from ssmbench.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["compare", str(sweep), "--pivot", "model,task", "--group-by", "model"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: --group-by does not combine with --pivot" in err and "Traceback" not in err
    main(["compare", "--help"])
    assert "--pivot ROW,COL" in capsys.readouterr().out


def test_rich_table_bolds_the_column_best(sweep):
    from rich.console import Console

    from ssmbench.compare.pivot import render_pivot_rich

    console = Console(file=io.StringIO(), force_terminal=True, color_system="standard", width=400)
    render_pivot_rich(pivot_runs(load_runs([str(sweep)]), "model", "task"), console)
    lines = console.file.getvalue().splitlines()
    lru = next(line for line in lines if "lru" in line and "0.940" in line)
    s4 = next(line for line in lines if "s4" in line and "0.820 ± 0.020" in line)
    assert "\x1b[1m0.940 ± 0.036" in lru and "\x1b[1m0.860 ± 0.014" in lru
    assert "\x1b[1m0.820" not in s4
