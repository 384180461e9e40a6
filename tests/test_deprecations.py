"""Renamed config keys (ssmbench.deprecations): stored configs and command-line overrides with the old
keys are migrated to the new ones with one warning line each, and an old checkpoint still evaluates."""

import copy
import json

import pytest
import torch
from omegaconf import OmegaConf

from ssmbench.config import register_resolvers
from ssmbench.deprecations import RENAMED, migrate_config, migrate_overrides
from tests.compose import composed
from tests.helpers import run_cli, train

OLD_MIXER = {"_target_": "ssmbench.models.nrnn.NewtonRNNMixer", "state_size": 32, "n_heads": 2,
             "lr_factor": 0.25, "solver": "quasi", "max_iter": 30}


def stored_config() -> dict:
    return {"optimizer": {"lr": 0.002, "weight_decay": 0.01}, "model": {"name": "nrnn", "mixer": dict(OLD_MIXER)}}


def warning_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_migrate_config_renames_every_old_key_of_a_dict(capsys):
    cfg = stored_config()
    migrated = migrate_config(cfg, source="run/.hydra/config.yaml")
    assert migrated is cfg and isinstance(migrated, dict)
    assert migrated["model"]["mixer"] == {"_target_": "ssmbench.models.nrnn.NewtonRNNMixer", "max_iter": 30,
                                          "d_state": 32, "num_heads": 2,
                                          "ssm_lr": "${mul:${optimizer.lr},0.25}", "jacobian": "diag"}
    register_resolvers()
    assert OmegaConf.create(migrated).model.mixer.ssm_lr == pytest.approx(0.002 * 0.25)
    lines = warning_lines(capsys)
    assert len(lines) == len(RENAMED) == 4
    for line, (old, new) in zip(lines, [("model.mixer.state_size=32", "model.mixer.d_state=32"),
                                        ("model.mixer.n_heads=2", "model.mixer.num_heads=2"),
                                        ("model.mixer.lr_factor=0.25",
                                         "model.mixer.ssm_lr=${mul:${optimizer.lr},0.25}"),
                                        ("model.mixer.solver=quasi", "model.mixer.jacobian=diag")]):
        assert line.startswith("warning: run/.hydra/config.yaml: ")
        assert f"{old} is deprecated, use {new}" in line and "next release" in line, line


@pytest.mark.parametrize("solver,jacobian", [("quasi", "diag"), ("newton", "full"), ("sequential", "none")])
def test_migrate_config_renames_the_solver_values(solver, jacobian):
    cfg = OmegaConf.create({"model": {"mixer": {"solver": solver}}})
    OmegaConf.set_struct(cfg, True)
    migrated = migrate_config(cfg)
    assert migrated is cfg and OmegaConf.to_container(migrated) == {"model": {"mixer": {"jacobian": jacobian}}}


def test_migrate_config_keeps_a_new_config_and_a_new_key_as_they_are(capsys):
    new = {"model": {"mixer": {"d_state": 16, "jacobian": "full"}}, "optimizer": {"lr": 1e-3}}
    assert migrate_config(copy.deepcopy(new)) == new
    assert warning_lines(capsys) == []
    both = migrate_config({"model": {"mixer": {"state_size": 8, "d_state": 16}}})
    assert both == {"model": {"mixer": {"d_state": 16}}}
    (line,) = warning_lines(capsys)
    assert "model.mixer.state_size=8 is deprecated" in line and "model.mixer.d_state=16, which is kept" in line


def test_migrate_overrides(capsys):
    overrides = ["model=nrnn", "model.mixer.state_size=32", "+model.mixer.n_heads=2", "++model.mixer.solver=newton",
                 "model.mixer.solver=quasi,sequential", "~model.mixer.lr_factor", "optimizer.lr=3e-3",
                 "model.mixer.lr_factor=0.5"]
    assert migrate_overrides(overrides) == [
        "model=nrnn", "model.mixer.d_state=32", "++model.mixer.num_heads=2", "++model.mixer.jacobian=full",
        "model.mixer.jacobian=diag,none", "~model.mixer.ssm_lr", "optimizer.lr=3e-3",
        "model.mixer.ssm_lr='${mul:${optimizer.lr},0.5}'"]
    lines = warning_lines(capsys)
    assert len(lines) == 6 and all("is deprecated" in line and "next release" in line for line in lines)
    assert "command line: model.mixer.state_size=32 is deprecated, use model.mixer.d_state=32" in lines[0]
    assert migrate_overrides(["model.mixer.d_state=32", "model.mixer.jacobian=full"]) == [
        "model.mixer.d_state=32", "model.mixer.jacobian=full"]


def test_migrated_overrides_compose_to_the_old_meaning():
    """The old LRU lr_factor and nrnn keys given on the command line compose, as the new keys, to what
    the old ones meant: ssm_lr = factor x optimizer.lr; the solver's Jacobian."""
    lru = migrate_overrides(["model=lru", "optimizer.lr=0.004", "model.mixer.lr_factor=0.25"])
    with composed(*lru) as cfg:
        assert cfg.model.mixer.ssm_lr == pytest.approx(0.001) and "lr_factor" not in cfg.model.mixer
    nrnn = migrate_overrides(["model=nrnn", "model.mixer.state_size=24", "model.mixer.n_heads=3",
                              "model.mixer.solver=newton", "model.mixer.cell=gru"])
    with composed(*nrnn) as cfg:
        mixer = cfg.model.mixer
        assert (mixer.d_state, mixer.num_heads, mixer.jacobian) == (24, 3, "full")


def test_the_model_configs_use_the_new_keys_only():
    new_keys = set()
    for model in ("nrnn", "lru"):
        with composed(f"model={model}") as cfg:
            assert all(OmegaConf.select(cfg, r.old) is None for r in RENAMED)
            new_keys |= {r.new for r in RENAMED if OmegaConf.select(cfg, r.new, default="absent") != "absent"}
    assert new_keys == {r.new for r in RENAMED}


def test_a_resumed_run_reads_its_stored_config_with_the_new_keys(tmp_path, capsys):
    from ssmbench.resume import resumed_config

    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(OmegaConf.create(stored_config()), tmp_path / ".hydra" / "config.yaml")
    cfg = resumed_config(OmegaConf.create({"resume": str(tmp_path)}), [])
    assert cfg.model.mixer.d_state == 32 and cfg.model.mixer.jacobian == "diag" and "solver" not in cfg.model.mixer
    assert len(warning_lines(capsys)) == len(RENAMED)


@pytest.mark.slow
def test_a_checkpoint_with_the_old_nrnn_keys_is_evaluated(tmp_path):
    first = train(tmp_path / "run", "model=nrnn", "model.d_model=16", "model.n_layers=1", "task.n_train=128",
                  "task.n_val=32", "task.n_test=32", "trainer.max_epochs=1")
    ckpt_path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    mixer = ckpt["hyper_parameters"]["config"]["model"]["mixer"]
    assert mixer["jacobian"] == "diag"
    mixer["state_size"], mixer["n_heads"], mixer["solver"] = mixer.pop("d_state"), mixer.pop("num_heads"), "quasi"
    del mixer["jacobian"]
    old_ckpt = tmp_path / "old.ckpt"
    torch.save(ckpt, old_ckpt)

    proc = run_cli("eval", f"ckpt_path={old_ckpt}", f"hydra.run.dir={tmp_path / 'eval'}", "logger=csv")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "model.mixer.solver=quasi is deprecated, use model.mixer.jacobian=diag" in proc.stderr
    assert "model.mixer.state_size=null is deprecated, use model.mixer.d_state=null" in proc.stderr
    assert "model.mixer.n_heads=1 is deprecated, use model.mixer.num_heads=1" in proc.stderr
    evaluated = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert evaluated["status"] == "completed"
    assert evaluated["metrics"]["test/acc"] == pytest.approx(first["metrics"]["test/acc"], abs=1e-6)


def test_old_keys_on_the_command_line_are_renamed_with_a_warning():
    proc = run_cli("train", "--cfg", "job", "model=nrnn", "model.mixer.state_size=16", "model.mixer.solver=newton")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "d_state: 16" in proc.stdout and "jacobian: full" in proc.stdout
    assert proc.stderr.count("is deprecated") == 2


@pytest.mark.parametrize("model", ["s4", "s4d", "lru", "deltanet"])
def test_a_config_written_before_the_added_keys_fits_todays_model(model):
    """A checkpoint's config from before ADDED's keys existed is completed with the values that build the
    model it was trained with, so `ckpt_path=` accepts it and resume rebuilds the same model."""
    from ssmbench.deprecations import ADDED
    from ssmbench.preflight import model_difference

    with composed(f"model={model}", "task=copy") as cfg:
        today = OmegaConf.to_container(cfg.model, resolve=False)
    old = {"model": copy.deepcopy(today)}
    for added in ADDED:
        if added.mixer not in (None, today["mixer"]["_target_"]):
            continue                                   # a key of another mixer (the LRU's own glu stays)
        *path, last = added.key.split(".")
        node = old
        for part in path:
            node = node[part]
        node.pop(last, None)
    assert "decoder" not in old["model"]
    migrated = migrate_config(old)["model"]
    assert model_difference(migrated, today) is None
    assert ("dt_transform" in migrated["mixer"]) == model.startswith("s4")
