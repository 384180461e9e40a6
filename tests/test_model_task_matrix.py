"""fast_dev_run (one train, val and test batch) of every model x task pair in conf/, in-process.

Parametrized from the files in conf/model and conf/task, so a new config is covered automatically.
Pairs the framework must refuse (a non-causal model on a task that requires causality) are
checked to fail with the clear error instead.
"""

import math

import pytest
import torch
from hydra.utils import instantiate

from ssmbench.build import build_lit, build_model, build_task, trainer_config
from ssmbench.config import config_groups
from ssmbench.errors import UserError
from tests.compose import composed
from tests.helpers import SMALL_MIXER, fit_and_test
from tests.task_fixtures import FIXTURES

SMALL = ["model.d_model=16", "model.n_layers=1", "task.batch_size=2", "task.num_workers=0", "trainer=debug"]


@pytest.mark.parametrize("task", config_groups()["task"])
@pytest.mark.parametrize("model", config_groups()["model"])
def test_fast_dev_run(model, task, tmp_path):
    if task in FIXTURES:
        FIXTURES[task](tmp_path / "data")
    with composed(f"model={model}", f"task={task}", f"paths.data_dir={tmp_path / 'data'}", *SMALL,
                  *SMALL_MIXER.get(model, []), output_dir=tmp_path / "run") as cfg:
        if "n_train" in cfg.task:  # a generated task: one batch of each split needs only a few examples
            cfg.task.n_train, cfg.task.n_val, cfg.task.n_test = 8, 4, 4
        dm = build_task(cfg)
        net = instantiate(cfg.model)
        if dm.causal and not net.causal:
            with pytest.raises(UserError, match=f"model {model} is not causal.*task {task} requires"):
                build_model(cfg, dm)
            return
        result = fit_and_test(cfg, dm)
        assert 0.0 <= result["test/acc"] <= 1.0
        assert math.isfinite(result["test/loss"])


@pytest.mark.parametrize("model", config_groups()["model"])
def test_fast_dev_run_with_muon(model, tmp_path):
    """Every model trains a batch with optimizer=muon (Muon on the blocks' 2-D weights, AdamW on the rest)."""
    with composed(f"model={model}", "task=copy", "optimizer=muon", *SMALL, *SMALL_MIXER.get(model, []),
                  output_dir=tmp_path / "run") as cfg:
        dm = build_task(cfg)
        net = build_model(cfg, dm)
        lit = build_lit(cfg, net, dm)
        trainer = instantiate(trainer_config(cfg), logger=False, callbacks=[], enable_checkpointing=False,
                              enable_progress_bar=False)
        before = {n: p.detach().clone() for n, p in net.named_parameters()}
        trainer.fit(lit, datamodule=dm)
        moved = [n for n, p in net.named_parameters() if not torch.equal(p.detach(), before[n])]
        assert any(n.startswith("blocks.") for n in moved)
        (result,) = trainer.test(lit, datamodule=dm, verbose=False)
        assert math.isfinite(result["test/loss"])
