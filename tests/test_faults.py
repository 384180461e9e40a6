"""Ordinary faults through the real command line, in subprocesses: runs started together, real signals
(SIGINT, SIGTERM, SIGKILL), a diverging loss, resumes that must end exactly where the uninterrupted run
ends, and bad inputs that must end in one line. Every run is tiny (a 1-layer GRU of width 32)."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ssmbench.errors import UserError
from tests.compose import composed
from tests.helpers import REPO_ROOT, cli_env, run_cli, train

TINY = ["model=gru", "model.d_model=32", "model.n_layers=1", "task.n_train=512", "task.n_val=64", "task.n_test=64",
        "print_config=false"]
# Long enough (3 x 64 steps, dropout on) for a signal to land mid-training on any machine; every step
# logged, so wherever the run stops, the step it stopped at has a row that must not be lost or doubled.
LONG = ["model=gru", "model.d_model=32", "model.n_layers=1", "model.dropout=0.1", "task.n_train=4096",
        "task.n_val=64", "task.n_test=64", "trainer.max_epochs=3", "trainer.log_every_n_steps=1", "print_config=false"]


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str, code: int = 2) -> None:
    text = proc.stdout + proc.stderr
    assert proc.returncode == code, f"exit {proc.returncode}:\n{text[-3000:]}"
    assert "Traceback" not in text, text[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], f"{fragment!r} not in {errors[0]!r}"


def start_train(run_dir: Path, *overrides: str, cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ssmbench", "train", f"hydra.run.dir={run_dir}", "logger=csv",
                             *overrides], cwd=str(cwd or REPO_ROOT), env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended before {path} appeared:\n{proc.communicate()[1][-3000:]}"
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def csv_rows(run_dir: Path) -> list[dict]:
    with (run_dir / "csv" / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def checkpoint(run_dir: Path, name: str = "last.ckpt") -> dict:
    return torch.load(run_dir / "checkpoints" / name, map_location="cpu", weights_only=True)


def max_weight_difference(a: dict, b: dict) -> float:
    """max |a - b| over the model's weights and the optimizer's state (every tensor of both)."""
    diffs = [(a["state_dict"][k] - b["state_dict"][k]).abs().max().item() for k in a["state_dict"] if k.startswith("net.")]
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        diffs += [(sa[k].float() - sb[k].float()).abs().max().item() for k in sa]
    return max(diffs)


def resume(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return run_cli("train", f"resume={run_dir}", *overrides)


# ---------------------------------------------------------------- directories


@pytest.mark.slow
def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path):
    """Two processes in one working directory at once, and two multiruns at once."""
    single = [sys.executable, "-m", "ssmbench", "train", "logger=csv", "trainer.max_epochs=1", *TINY]
    sweep = [*single[:4], "-m", *single[4:], "seed=1,2"]
    procs = [subprocess.Popen(args, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for args in (single, single, sweep, sweep)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()[-3000:]
    runs = sorted((tmp_path / "outputs" / "copy" / "gru").iterdir())
    sweeps = sorted((tmp_path / "outputs" / "multirun").iterdir())
    assert len(runs) == 2 and len(sweeps) == 2
    for run in runs + [job for sweep in sweeps for job in (sweep / "0", sweep / "1")]:
        record = results(run)
        assert record["status"] == "completed" and record["global_step"] == 8
        steps = [row["step"] for row in csv_rows(run) if row.get("train/loss_step")]
        assert steps == sorted(set(steps), key=float)  # one run's rows, none from another


def test_a_directory_that_holds_a_run_is_not_written_again(tmp_path):
    run = tmp_path / "run"
    train(run, "trainer=debug", *TINY)
    config = (run / ".hydra" / "config.yaml").read_text()
    proc = run_cli("train", f"hydra.run.dir={run}", "logger=csv", "trainer=debug", "seed=5", *TINY)
    assert_one_line_error(proc, "already holds a run", f"resume={run}")
    assert (run / ".hydra" / "config.yaml").read_text() == config and results(run)["seed"] == 1


# ---------------------------------------------------------------- checkpoints


@pytest.mark.slow
def test_last_ckpt_is_the_last_epoch_even_when_the_best_is_older(tmp_path):
    """A learning rate too small to change val/acc after the first epoch: the best stays epoch 0."""
    done = train(tmp_path / "run", *TINY, "trainer.max_epochs=3", "optimizer.lr=1e-9")
    assert Path(done["best_checkpoint"]).name == "epoch_000.ckpt"
    last = checkpoint(tmp_path / "run")
    assert last["epoch"] == 2 and last["global_step"] == done["global_step"] == 24
    assert done["train_steps"] == 24  # throughput over the whole run, not up to the best checkpoint
    assert not list((tmp_path / "run" / "checkpoints").glob("*.tmp"))


def test_debug_trainer_writes_no_checkpoint(tmp_path):
    train(tmp_path / "run", "trainer=debug", *TINY)
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())


# ---------------------------------------------------------------- divergence


def test_a_non_finite_loss_fails_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    proc = run_cli("train", f"hydra.run.dir={tmp_path / 'run'}", "logger=csv", *TINY, "optimizer.lr=1e6",
                   "scheduler=constant")
    assert_one_line_error(proc, "non-finite loss", code=1)
    record = results(tmp_path / "run")
    assert record["status"] == "failed" and "non-finite loss" in record["error"]
    assert "last good checkpoint: none" in record["error"]


def test_the_non_finite_guard_can_be_switched_off(tmp_path):
    done = train(tmp_path / "run", *TINY, "trainer.max_epochs=1", "optimizer.lr=1e6", "scheduler=constant",
                 "trainer.stop_on_nonfinite=false")
    assert done["status"] == "completed" and done["metrics"]["test/loss"] is None  # NaN, written as null


# ---------------------------------------------------------------- signals and resumes


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("uninterrupted") / "run"
    return run, train(run, *LONG)


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_run_with_a_checkpoint_and_resume_ends_where_the_uninterrupted_run_ends(
        tmp_path, uninterrupted, sig, code):
    """Mid-epoch: last.ckpt every 5 steps; the signal is honoured at the next batch end, with a checkpoint."""
    reference_dir, reference = uninterrupted
    run = tmp_path / "run"
    proc = start_train(run, *LONG, "callbacks.model_checkpoint.every_n_train_steps=5")
    wait_for(run / "checkpoints" / "last.ckpt", proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err[-3000:]
    assert "Traceback" not in err and f"resume={run}" in err
    record = results(run)
    assert record["status"] == "interrupted" and signal.Signals(sig).name in record["error"]
    stopped_at = checkpoint(run)["global_step"]
    assert 0 < stopped_at < reference["global_step"]

    proc = resume(run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = results(run)
    assert done["status"] == "completed" and done["resumes"] == 1 and done["resumed_from"].endswith("last.ckpt")
    assert max_weight_difference(checkpoint(run), checkpoint(reference_dir)) == 0.0
    assert done["metrics"]["test/acc"] == reference["metrics"]["test/acc"]
    assert done["metrics"]["val/acc_best"] == reference["metrics"]["val/acc_best"]
    assert done["train_steps"] == reference["train_steps"] == done["global_step"]
    assert Path(done["best_checkpoint"]).name == Path(reference["best_checkpoint"]).name

    def losses(d):
        return [(row["step"], row["train/loss_step"]) for row in csv_rows(d) if row.get("train/loss_step")]

    assert losses(run) == losses(reference_dir)  # the rows logged before the stop kept, none twice


@pytest.mark.slow
def test_a_killed_run_shows_as_died_and_resumes_exactly_from_its_last_epoch(tmp_path, uninterrupted):
    reference_dir, reference = uninterrupted
    run = tmp_path / "run"
    proc = start_train(run, *LONG)
    wait_for(run / "checkpoints" / "last.ckpt", proc)
    proc.kill()
    proc.communicate()
    assert results(run)["status"] == "running"
    shown = run_cli("compare", str(run), "--format", "json")
    assert json.loads(shown.stdout)["runs"][0]["status"] == "died", shown.stdout
    assert checkpoint(run)["global_step"] % 64 == 0  # an epoch boundary

    proc = resume(run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert max_weight_difference(checkpoint(run), checkpoint(reference_dir)) == 0.0
    assert results(run)["metrics"]["test/acc"] == reference["metrics"]["test/acc"]


@pytest.mark.slow
def test_resume_trains_longer_in_the_same_directory_and_says_so(tmp_path):
    run = tmp_path / "run"
    first = train(run, *TINY, "trainer.max_epochs=1", "logger=[csv,wandb]")
    proc = resume(run, "trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = results(run)
    assert done["global_step"] == 16 and done["epochs"] == 2 and done["resumes"] == 1
    assert done["wandb_run_id"] == first["wandb_run_id"]
    assert len(list((run / "wandb").glob(f"offline-run-*-{first['wandb_run_id']}"))) == 2
    assert "max_epochs: 2" in (run / ".hydra" / "config.yaml").read_text()
    assert "trainer.max_epochs=2" in (run / ".hydra" / "overrides.yaml").read_text()
    assert done["wall_time_s"] > first["wall_time_s"]


def test_resume_refuses_another_model_and_a_directory_that_is_no_run(tmp_path):
    run = tmp_path / "run"
    train(run, "trainer=debug", *TINY)
    assert_one_line_error(resume(run, "model=lru"), "'model=lru' would make another run")
    assert_one_line_error(resume(tmp_path), "not a run directory")


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("override, fragments", [
    ("optimizer.lr=-1", ("optimizer.lr=-1", "> 0")),
    ("optimizer.lr=nan", ("optimizer.lr=nan", "finite")),
    ("seed=abc", ("seed='abc'", "integer")),
    ("task.n_train=0", ("task.n_train=0", ">= 1")),
    ("task.seq_len=0", ("task.seq_len=0", ">= 1")),
    ("model.d_model=0", ("model.d_model=0", ">= 1")),
    ("model.d_model=abc", ("model.d_model='abc'", "integer")),
    ("model.n_layers=-1", ("model.n_layers=-1", ">= 1")),
    ("kernels=cuda", ("kernels='cuda'", "auto, torch, triton")),
])
def test_bad_values_are_refused_in_one_line_naming_the_key(override, fragments):
    """The preflight check (in-process; the CLI path of its error is the next test)."""
    from ssmbench.preflight import check_config

    with composed(*TINY, override) as cfg:
        with pytest.raises(UserError) as refused:
            check_config(cfg)
    message = str(refused.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_a_bad_value_ends_the_run_in_one_line_and_a_failed_record(tmp_path):
    proc = run_cli("train", f"hydra.run.dir={tmp_path / 'run'}", "logger=csv", *TINY, "optimizer.lr=-1")
    assert_one_line_error(proc, "optimizer.lr=-1", "> 0")
    assert results(tmp_path / "run")["status"] == "failed"


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("trained") / "run"
    train(run, *TINY, "trainer.max_epochs=1")
    return run / "checkpoints" / "last.ckpt"


def test_bad_checkpoints_end_in_one_line_before_anything_is_built(tmp_path, trained_checkpoint):
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(trained_checkpoint.read_bytes()[:5000])
    cases = [
        (tmp_path / "missing.ckpt", "checkpoint not found"),
        (tmp_path, "is a directory"),
        (truncated, "not a readable PyTorch checkpoint"),
    ]
    for path, fragment in cases:
        proc = run_cli("train", f"hydra.run.dir={tmp_path / path.name}-run", "logger=csv", *TINY, f"ckpt_path={path}")
        assert_one_line_error(proc, fragment)
        assert "params" not in results(tmp_path / f"{path.name}-run")  # failed before the model was built
    proc = run_cli("train", f"hydra.run.dir={tmp_path / 'lru'}", "logger=csv", *TINY, "model=lru",
                   f"ckpt_path={trained_checkpoint}")
    assert_one_line_error(proc, "was trained with another model", "model.name: 'gru' in the checkpoint")


def test_eval_with_another_model_is_one_line_and_leaves_a_failed_record(tmp_path, trained_checkpoint):
    proc = run_cli("eval", f"ckpt_path={trained_checkpoint}", "model=lru", f"hydra.run.dir={tmp_path / 'eval'}")
    assert_one_line_error(proc, "holds a gru model", "drop 'model=lru'")
    assert results(tmp_path / "eval")["status"] == "failed"


def test_output_locations_that_cannot_be_written(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = run_cli("train", f"hydra.run.dir={blocker / 'run'}", *TINY)
    assert_one_line_error(proc, f"hydra.run.dir={blocker / 'run'}", "is a file")
    from ssmbench import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli.os, "access", lambda path, mode: Path(path) != tmp_path)  # root may write anywhere
    with pytest.raises(UserError, match=f"paths.log_dir=outputs: cannot create it, {tmp_path} is not writable"):
        cli._prepare_job_arguments("train", ["model=gru"])


@pytest.mark.skipif(Path("/proc/sys/vm/overcommit_memory").exists()
                    and Path("/proc/sys/vm/overcommit_memory").read_text().strip() == "1",
                    reason="with overcommit_memory=1 a 12 TiB allocation is granted and the kernel kills the process")
def test_out_of_memory_is_one_line_with_the_size_and_the_settings(tmp_path):
    proc = run_cli("train", f"hydra.run.dir={tmp_path / 'run'}", "logger=csv", *TINY, "model.d_model=1048576")
    assert_one_line_error(proc, "out of memory while building", "GiB did not fit", "peak", "model.d_model=1048576",
                          "task.batch_size=64")
    assert "out of memory" in results(tmp_path / "run")["error"]


def test_verbose_shows_the_traceback(tmp_path):
    proc = run_cli("train", "--verbose", f"hydra.run.dir={tmp_path / 'run'}", "logger=csv", *TINY, "seed=abc")
    assert proc.returncode == 2 and "Traceback" in proc.stderr and "error: seed='abc'" in proc.stderr


def test_a_bidirectional_mixer_on_a_causal_task_names_the_switch_to_turn_off(tmp_path):
    proc = run_cli("train", f"hydra.run.dir={tmp_path / 'run'}", "logger=csv", "task=mqar", "model=s4",
                   "model.mixer.bidirectional=true", "print_config=false")
    assert_one_line_error(proc, "set model.mixer.bidirectional=false")
    assert "model.bidirectional=false" not in proc.stderr
