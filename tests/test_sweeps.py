"""Sweeps from the command line: Hydra multirun (grouped in wandb, read by compare), the Optuna
search of conf/sweep/lr_wd.yaml, and the submitit launchers (SLURM config, local executor)."""

import json
import struct
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ssmbench.compare import compare
from ssmbench.config import config_dir, register_resolvers
from tests.helpers import run_cli

TINY = ["task.n_train=128", "task.n_val=64", "task.n_test=64", "model.d_model=16", "model.n_layers=1",
        "print_config=false"]


def jobs_of(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def results_of(job: Path) -> dict:
    return json.loads((job / "results.json").read_text())


def compare_json(capsys, *args) -> dict:
    compare([*map(str, args), "--format", "json"])
    return json.loads(capsys.readouterr().out)


def wandb_run_record(run_dir: Path):
    """The run record (project, group, tags, job type) of the offline wandb run in `run_dir`.

    An offline run is a .wandb file: a 7-byte header, then protobuf `Record`s framed like a LevelDB
    log (32 KiB blocks; each chunk has a 7-byte header: crc32, length, type 1 full / 2 first /
    3 middle / 4 last)."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data, pos, chunk = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            chunk = b""
            if record.WhichOneof("record_type") == "run":
                return record.run
    raise AssertionError(f"no run record in {path}")


@pytest.mark.slow
def test_multirun_2x2_is_grouped_in_wandb_and_compared(tmp_path, capsys):
    sweep = tmp_path / "sweep-2x2"
    proc = run_cli("train", "-m", "model=gru,transformer", "optimizer.lr=1e-3,3e-3", "trainer.max_epochs=1",
                   "logger=[csv,wandb]", f"hydra.sweep.dir={sweep}", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = jobs_of(sweep)
    assert [j.name for j in jobs] == ["0", "1", "2", "3"]
    results = {j.name: results_of(j) for j in jobs}
    assert all(r["status"] == "completed" for r in results.values())

    for job in jobs:
        run = wandb_run_record(job)
        assert run.run_group == "sweep-2x2"  # group = the sweep id, the same for all four jobs
        assert list(run.tags) == [results[job.name]["model"], "copy"] and run.project == "ssmbench"

    data = compare_json(capsys, sweep, "--metrics", "test/acc,val/acc_best,params,wall_time_s,train_samples_per_s")
    assert data["keys"] == ["model", "optimizer.lr"]
    rows = {r["run"]: r for r in data["runs"]}
    assert set(rows) == set(results)
    seen = set()
    for name, stored in results.items():
        row = rows[name]
        assert row["status"] == "completed" and row["config"]["model"] == stored["model"]
        assert row["metrics"]["test/acc"] == stored["metrics"]["test/acc"]
        assert row["metrics"]["val/acc_best"] == stored["metrics"]["val/acc_best"]
        for key in ("params", "wall_time_s", "train_samples_per_s"):
            assert row["metrics"][key] == stored[key]
        overrides = dict(o.split("=", 1) for o in OmegaConf.load(sweep / name / ".hydra" / "overrides.yaml"))
        assert float(overrides["optimizer.lr"]) == row["config"]["optimizer.lr"]
        seen.add((row["config"]["model"], row["config"]["optimizer.lr"]))
    assert seen == {("gru", 1e-3), ("gru", 3e-3), ("transformer", 1e-3), ("transformer", 3e-3)}
    accs = [r["metrics"]["test/acc"] for r in data["runs"]]
    assert accs == sorted(accs, reverse=True)

    compare([str(sweep)])
    table = capsys.readouterr().out
    assert "4 runs, sorted by test/acc" in table and table.count("completed") == 4
    assert "optimizer.lr" in table and "transformer" in table


def test_lr_wd_search_space():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override
    from optuna.distributions import LogUniformDistribution, UniformDistribution

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("config", ["sweep=lr_wd", "model=gru", "seed=7"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert sweeper.direction == "maximize" and cfg.optimized_metric == "val/acc_best"
    assert sweeper.sampler.seed == 7 and sweeper.max_failure_rate == 1.0 and sweeper.n_trials == 20
    assert cfg.hydra.mode == RunMode.MULTIRUN and sweeper.study_name == "copy_gru_lr_wd"
    parser = OverridesParser.create()
    space = {k: create_optuna_distribution_from_override(parser.parse_override(f"{k}={v}"))
             for k, v in sweeper.params.items()}
    assert space == {
        "optimizer.lr": LogUniformDistribution(1e-4, 1e-2),
        "optimizer.weight_decay": LogUniformDistribution(1e-3, 1e-1),
        "model.dropout": UniformDistribution(0.0, 0.3),
    }


@pytest.mark.slow
def test_optuna_sweep_of_3_trials_reports_best_and_survives_a_crashed_trial(tmp_path, capsys):
    """lr is a choice between a working value and a negative one (AdamW raises): those trials crash,
    are recorded as failed, and the search still finishes with the best of the others."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    import optuna

    sweep, storage = tmp_path / "optuna", f"sqlite:///{tmp_path / 'study.db'}"
    proc = run_cli("train", "sweep=lr_wd", "model=gru", "hydra.sweeper.n_trials=3", f"hydra.sweeper.storage={storage}",
                   "optimizer.lr=choice(3e-3,-1.0)", "seed=1", "trainer.max_epochs=1", "logger=csv",
                   f"hydra.sweep.dir={sweep}", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = jobs_of(sweep)
    assert len(jobs) == 3
    trials = []
    for job in jobs:
        overrides = dict(o.split("=", 1) for o in OmegaConf.load(job / ".hydra" / "overrides.yaml") if "=" in o)
        trials.append((job, {k: float(overrides[k]) for k in ("optimizer.lr", "optimizer.weight_decay", "model.dropout")},
                       results_of(job)))
    for _, params, results in trials:
        assert 1e-3 <= params["optimizer.weight_decay"] <= 1e-1 and 0.0 <= params["model.dropout"] <= 0.3
        if params["optimizer.lr"] < 0:
            assert results["status"] == "failed" and "optimizer.lr=-1.0 must be a finite number > 0" in results["error"]
        else:
            assert results["status"] == "completed"
    statuses = sorted(r["status"] for _, _, r in trials)
    assert "failed" in statuses and "completed" in statuses  # seed=1 samples both choices

    best = OmegaConf.to_container(OmegaConf.load(sweep / "optimization_results.yaml"))
    completed = [(p, r["metrics"]["val/acc_best"]) for _, p, r in trials if r["status"] == "completed"]
    best_params, best_value = max(completed, key=lambda pv: pv[1])
    assert best["best_value"] == best_value and best["best_params"] == best_params

    study = optuna.load_study(study_name="copy_gru_lr_wd", storage=storage)
    states = [t.state.name for t in sorted(study.trials, key=lambda t: t.number)]
    assert states == ["COMPLETE" if r["status"] == "completed" else "FAIL" for _, _, r in trials]

    data = compare_json(capsys, sweep)
    assert {r["status"] for r in data["runs"]} == {"completed", "failed"} and len(data["runs"]) == 3
    assert set(data["keys"]) == {"optimizer.lr", "optimizer.weight_decay", "model.dropout"}
    assert data["optuna"][0]["best_value"] == best_value and data["optuna"][0]["best_params"] == best_params


def test_slurm_launcher_wires_the_trainer_into_sbatch(tmp_path, monkeypatch):
    """hydra/launcher=slurm: the sbatch script the submitit plugin would submit (no cluster needed)."""
    submitit = pytest.importorskip("submitit")
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit checks that it is on a SLURM machine
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")

    class Submitted(Exception):
        pass

    def capture(executor, fn, *args):
        raise Submitted(executor, args)

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", capture)
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("config", ["hydra/launcher=slurm", "model=gru", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2",
                                 "task.num_workers=5", "hydra.launcher.partition=gpu", f"hydra.sweep.dir={tmp_path / 's'}"],
                      return_hydra_config=True)
        launcher = instantiate(cfg.hydra.launcher)
    GlobalHydra.instance().clear()
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    with pytest.raises(Submitted) as submitted:
        launcher.launch([["seed=1"], ["seed=2"]], initial_job_idx=0)
    executor, args = submitted.value.args
    assert list(args[0]) == [["seed=1"], ["seed=2"]]  # one array task per job
    assert executor._executor.max_num_timeout == 3
    sbatch = executor._executor._make_submission_file_text("python -m submitit.core._submit x", "uid").splitlines()
    for line in ("#SBATCH --gpus-per-node=4", "#SBATCH --ntasks-per-node=4", "#SBATCH --nodes=2",
                 "#SBATCH --cpus-per-task=6", "#SBATCH --partition=gpu", "#SBATCH --requeue",
                 "#SBATCH --signal=USR2@120", "#SBATCH --time=1440", "#SBATCH --job-name=ssmbench_copy_gru"):
        assert line in sbatch, (line, sbatch)


@pytest.mark.slow
def test_submitit_local_launcher_runs_the_job_in_its_own_process(tmp_path, capsys):
    """The job (task function and config, pickled by submitit) runs in a submitit worker process and its
    result comes back to the sweep; one job keeps the test short."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "local"
    proc = run_cli("train", "-m", "hydra/launcher=submitit_local", "model=gru", "seed=3", "trainer=debug", "logger=csv",
                   f"hydra.sweep.dir={sweep}", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (job,) = jobs_of(sweep)
    results = results_of(job)
    assert results["status"] == "completed" and results["seed"] == 3
    (result_pickle,) = (sweep / ".submitit").glob("*/*_result.pkl")  # the job ran under submitit
    log = next(result_pickle.parent.glob("*_log.out")).read_text()
    assert str(job / "results.json") in log  # ...and train's own log line is in the worker's output
    data = compare_json(capsys, sweep)
    assert [r["run"] for r in data["runs"]] == ["0"] and data["runs"][0]["status"] == "completed"
