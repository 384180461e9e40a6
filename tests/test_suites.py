"""Suites (conf/suite/): named grids of models x tasks x learning rates x seeds run as one multirun. Each suite
runs here at its tiniest (one model, one lr, one seed, one batch of each task) to prove the wiring; the grids
themselves are run by benchmarks/reproduce.py and by users."""

import json
import shlex
import sys

import pytest
from omegaconf import OmegaConf

from ssmbench.cli import main
from ssmbench.compare.pivot import pivot_runs
from ssmbench.compare.runs import load_runs
from ssmbench.config import config_dir, config_groups

SUITES = config_groups()["suite"]
TINY = ["model=s4d", "optimizer.lr=1e-3", "seed=1", "trainer=debug", "model.d_model=8", "model.n_layers=1",
        "logger=csv", "print_config=false", "task.batch_size=4", "task.n_train=32", "task.n_val=8", "task.n_test=8"]


def suite_grid(name: str) -> dict:
    """The sweeper params of a suite with the shared grid under it (its own params win)."""
    own = OmegaConf.load(config_dir() / "suite" / f"{name}.yaml")
    shared = OmegaConf.load(config_dir() / "suite" / "_grid.yaml")
    return {**shared.hydra.sweeper.params, **own.hydra.sweeper.params}


def run_inprocess(argv: list[str], monkeypatch) -> None:
    """`ssmbench *argv` in this process (sys.argv and the environment restored afterwards)."""
    monkeypatch.setattr(sys, "argv", ["ssmbench"])
    monkeypatch.setenv("SSMBENCH_COMMAND", "train")
    monkeypatch.setenv("WANDB_MODE", "offline")
    main(argv)


def test_the_three_suites_exist_and_name_real_models_and_tasks():
    assert SUITES == ["mad", "recall", "state_tracking"]
    tasks = {"mad": {"mad_recall", "mad_fuzzy_recall", "mad_noisy_recall", "mad_selective_copy", "mad_compression",
                     "mad_memorization"},
             "recall": {"copy", "selective_copy", "mqar", "induction"},
             "state_tracking": {"parity", "modular_sum", "permutation"}}
    groups = config_groups()
    for name in SUITES:
        grid = suite_grid(name)
        assert set(grid["task"].split(",")) == tasks[name]
        assert set(grid["model"].split(",")) <= set(groups["model"])
        assert len(grid["seed"].split(",")) >= 3 and len(grid["optimizer.lr"].split(",")) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("suite", SUITES)
def test_tiny_suite_runs_every_task_and_pivots(suite, tmp_path, monkeypatch):
    sweep = tmp_path / suite
    run_inprocess(["train", f"suite={suite}", *TINY, f"hydra.sweep.dir={sweep}"], monkeypatch)
    tasks = suite_grid(suite)["task"].split(",")
    jobs = sorted((p for p in sweep.iterdir() if p.is_dir()), key=lambda p: int(p.name))
    assert len(jobs) == len(tasks)
    results = [json.loads((job / "results.json").read_text()) for job in jobs]
    assert [r["status"] for r in results] == ["completed"] * len(tasks)
    assert sorted(r["task"] for r in results) == sorted(tasks)
    for r in results:
        assert r["replay"].endswith("hydra.mode=RUN") and f"suite={suite}" in r["replay"]
    pivot = pivot_runs(load_runs([str(sweep)]), "model", "task")
    assert pivot.rows == ["s4d"] and sorted(pivot.cols) == sorted(tasks)
    for task in tasks:
        (job,) = [j for j, r in zip(jobs, results) if r["task"] == task]
        cell = pivot.cells[("s4d", task)]
        assert cell.n == 1 and cell.mean == json.loads((job / "results.json").read_text())["metrics"]["test/acc"]


@pytest.mark.slow
def test_state_tracking_suite_tests_longer_than_it_trains(tmp_path, monkeypatch):
    sweep = tmp_path / "st"
    run_inprocess(["train", "suite=state_tracking", "task=parity", *TINY, f"hydra.sweep.dir={sweep}"], monkeypatch)
    cfg = OmegaConf.load(sweep / "0" / ".hydra" / "config.yaml")
    assert (cfg.task.seq_len, cfg.task.test_seq_len, cfg.task.score_from) == (32, 64, 33)
    assert cfg.model.max_len == 64


@pytest.mark.slow
def test_a_suite_job_replays_as_a_single_run_with_the_same_result(tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    run_inprocess(["train", "suite=recall", "task=copy", *TINY, f"hydra.sweep.dir={sweep}"], monkeypatch)
    first = json.loads((sweep / "0" / "results.json").read_text())
    replay = shlex.split(first["replay"])
    assert replay[:2] == ["ssmbench", "train"]
    run_inprocess([*replay[1:], f"hydra.run.dir={tmp_path / 'replayed'}"], monkeypatch)
    again = json.loads((tmp_path / "replayed" / "results.json").read_text())
    assert again["status"] == "completed" and not (tmp_path / "replayed" / "0").exists()
    assert again["metrics"]["test/acc"] == first["metrics"]["test/acc"]
    assert again["metrics"]["test/loss"] == first["metrics"]["test/loss"]
