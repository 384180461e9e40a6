"""task.test_seq_len: synthetic tasks train at seq_len and test at another length, and every model is sized
from the longest split (S4's and RTF's l_max, the backbone's positional table)."""

import math

import pytest
import torch
from hydra.utils import get_class

from ssmbench.build import build_task
from ssmbench.config import config_groups
from ssmbench.data.base import IGNORE_INDEX
from ssmbench.data.synthetic import SyntheticTask
from ssmbench.errors import UserError
from tests.compose import composed
from tests.helpers import SMALL_MIXER, fit_and_test


def synthetic_tasks() -> list[str]:
    tasks = []
    for task in config_groups()["task"]:
        with composed(f"task={task}") as cfg:
            if issubclass(get_class(cfg.task._target_), SyntheticTask):
                tasks.append(task)
    return tasks


SYNTHETIC = synthetic_tasks()


def test_every_generated_task_is_synthetic():
    assert {"copy", "selective_copy", "mqar", "induction", "parity", "modular_sum", "permutation"} <= set(SYNTHETIC)


@pytest.mark.parametrize("task", SYNTHETIC)
def test_test_split_has_test_seq_len_and_train_val_have_seq_len(task):
    with composed(f"task={task}", "task.n_train=8", "task.n_val=4", "task.n_test=6") as cfg:
        seq_len = int(cfg.task.seq_len)
        test_seq_len = 2 * seq_len + 3
        cfg.task.test_seq_len = test_seq_len
        dm = build_task(cfg)
    dm.setup()
    lengths = {name: ds.tensors[0].shape for name, ds in (("train", dm.train_set), ("val", dm.val_set),
                                                           ("test", dm.test_set))}
    assert lengths == {"train": (8, seq_len), "val": (4, seq_len), "test": (6, test_seq_len)}
    y = dm.test_set.tensors[1]
    labelled = y[y != IGNORE_INDEX]
    assert labelled.numel() > 0 and 0 <= int(labelled.min()) and int(labelled.max()) < dm.n_classes
    if dm.target == "token":
        # Labels reach past seq_len: the longer test examples are scored where no training example reached.
        assert (y[:, seq_len:] != IGNORE_INDEX).any()


def test_test_seq_len_leaves_the_training_data_unchanged():
    """The train and validation splits are drawn first, so testing longer does not change what is trained on."""
    sets = []
    for test_seq_len in ("null", "200"):
        with composed("task=mqar", "task.n_train=16", "task.n_val=8", "task.n_test=8",
                      f"task.test_seq_len={test_seq_len}") as cfg:
            dm = build_task(cfg)
        dm.setup()
        sets.append((dm.train_set.tensors, dm.val_set.tensors))
    for a, b in zip(*sets):
        assert all(torch.equal(u, v) for u, v in zip(a, b))


def test_state_tracking_test_lengths_lie_within_test_seq_len():
    with composed("task=parity", "task.seq_len=16", "task.train_lengths=[2,16]", "task.test_seq_len=48",
                  "task.test_lengths=[17,48]", "task.score_from=17", "task.n_test=64") as cfg:
        dm = build_task(cfg)
    dm.setup()
    x, y, lengths = dm.test_set.tensors
    assert x.shape == (64, 48) and 17 <= int(lengths.min()) and int(lengths.max()) <= 48
    assert (y[:, :16] == IGNORE_INDEX).all() and (y[:, 16] != IGNORE_INDEX).all()
    with composed("task=parity", "task.seq_len=16", "task.test_seq_len=48", "task.test_lengths=[17,60]") as cfg:
        with pytest.raises(UserError, match=r"test_lengths=\[17, 60\].*<= test_seq_len = 48"):
            build_task(cfg)


@pytest.mark.parametrize("bad", ["0", "-3", "true"])
def test_bad_test_seq_len_is_refused(bad):
    with composed("task=copy", f"task.test_seq_len={bad}") as cfg:
        with pytest.raises(UserError, match="test_seq_len=.* must be a length >= 1, or null"):
            build_task(cfg)


@pytest.mark.parametrize("model", config_groups()["model"])
def test_every_model_is_sized_by_the_longest_split_and_tests_longer(model, tmp_path):
    """One training batch at length 20, the test batch at 45: models with a length-sized table or kernel read
    the longest split (l_max = max_len = 45)."""
    with composed(f"model={model}", "task=copy", "task.seq_len=20", "task.test_seq_len=45", "task.n_copy=3",
                  "model.d_model=16", "model.n_layers=1", "task.batch_size=2", "trainer=debug",
                  *SMALL_MIXER.get(model, []), output_dir=tmp_path) as cfg:
        assert cfg.model.max_len == 45
        if "l_max" in cfg.model.mixer:
            assert cfg.model.mixer.l_max == 45
        dm = build_task(cfg)
        result = fit_and_test(cfg, dm)
    assert dm.test_set.tensors[0].shape[1] == 45
    assert math.isfinite(result["test/loss"]) and 0.0 <= result["test/acc"] <= 1.0
