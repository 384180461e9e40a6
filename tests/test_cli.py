"""The command line, end to end, in subprocesses (CPU, no network)."""

import json
from pathlib import Path

import pytest
import torch

from tests.helpers import run_cli, train

TINY = ["task.n_train=512", "task.n_val=128", "task.n_test=128", "model.d_model=32", "model.n_layers=1"]


def assert_clean_error(proc, *fragments):
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text, text[-3000:]
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in:\n{text[-3000:]}"


def test_help_lists_commands_and_every_config_group():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for word in ("train", "eval", "model", "task", "trainer", "optimizer", "scheduler", "logger", "gru", "copy", "debug"):
        assert word in proc.stdout


def test_unknown_command_and_unknown_option_are_one_clear_error():
    assert_clean_error(run_cli("trian"), "unknown command 'trian'", "train")
    assert_clean_error(run_cli("train", "model=nope"), "model/nope", "Available options", "gru")
    assert_clean_error(run_cli("train", "model.nope=1"), "nope")


def test_config_is_found_from_another_directory(tmp_path):
    proc = run_cli("train", "--cfg", "job", "model=transformer", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "ssmbench.models.transformer.AttentionMixer" in proc.stdout


def test_incompatible_model_and_task_fail_before_training(tmp_path):
    proc = run_cli("train", f"hydra.run.dir={tmp_path}", "logger=csv", "task.causal=true",
                   "model=transformer", "model.mixer.causal=false")
    assert_clean_error(proc, "model transformer is not causal", "task copy requires a causal model")
    assert not (tmp_path / "checkpoints").exists()


def test_eval_of_a_missing_or_invalid_checkpoint(tmp_path):
    assert_clean_error(run_cli("eval", f"ckpt_path={tmp_path / 'none.ckpt'}", cwd=tmp_path), "checkpoint not found")
    bad = tmp_path / "bad.ckpt"
    bad.write_text("not a checkpoint")
    assert_clean_error(run_cli("eval", f"ckpt_path={bad}", cwd=tmp_path), "is not a readable PyTorch checkpoint")
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    assert_clean_error(run_cli("eval", f"ckpt_path={tmp_path / 'other.ckpt'}", cwd=tmp_path), "is not an ssmbench checkpoint")


@pytest.mark.slow
def test_train_eval_and_resume(tmp_path):
    first = train(tmp_path / "run", "model=gru", "trainer.max_epochs=1", *TINY)
    assert first["status"] == "completed" and first["params"] > 0
    assert first["global_step"] == 8 and first["epochs"] == 1
    for key in ("test/acc", "test/loss", "val/acc_best", "train/acc"):
        assert key in first["metrics"]
    assert first["train_samples_per_s"] > 0 and first["wall_time_s"] > 0
    assert first["command"].startswith("ssmbench train") and "git_commit" in first
    assert first["kernels"] == {"mode": "auto", "used": []}  # a CPU run takes the torch paths
    run = tmp_path / "run"
    assert (run / ".hydra" / "config.yaml").is_file() and (run / "csv" / "metrics.csv").is_file()

    proc = run_cli("eval", f"ckpt_path={first['best_checkpoint']}", f"hydra.run.dir={tmp_path / 'eval'}", "logger=csv")
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert evaluated["metrics"]["test/acc"] == pytest.approx(first["metrics"]["test/acc"], abs=1e-6)

    resumed = train(tmp_path / "resumed", "model=gru", "trainer.max_epochs=2", *TINY,
                    f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}")
    assert resumed["global_step"] == 16 and resumed["epochs"] == 2


@pytest.mark.slow
def test_multirun_sweep_writes_one_directory_per_job(tmp_path):
    proc = run_cli("train", "-m", "model=gru,transformer", "seed=1,2", "trainer=debug", "logger=csv",
                   f"hydra.sweep.dir={tmp_path}", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in tmp_path.iterdir() if p.is_dir() and p.name.isdigit())
    assert [j.name for j in jobs] == ["0", "1", "2", "3"]
    seen = {(r["model"], r["seed"]) for r in (json.loads((j / "results.json").read_text()) for j in jobs)}
    assert seen == {("gru", 1), ("gru", 2), ("transformer", 1), ("transformer", 2)}


@pytest.mark.slow
def test_ddp_children_rejoin_their_multirun_job(tmp_path):
    """Lightning's DDP launcher re-runs the command line in child processes (here 2 CPU ranks, gloo)."""
    proc = run_cli("train", "-m", "seed=3,4", "model=gru", "trainer=ddp", "trainer.accelerator=cpu",
                   "trainer.devices=2", "trainer.precision=32-true", "trainer.max_epochs=1", "logger=csv",
                   f"hydra.sweep.dir={tmp_path}", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job, seed in (("0", 3), ("1", 4)):
        results = json.loads((tmp_path / job / "results.json").read_text())
        assert results["status"] == "completed" and results["seed"] == seed
        assert results["global_step"] == 4  # 512 samples / (64 per batch * 2 ranks)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["0", "1"]
