"""The task configs in conf/task state the published shapes and input normalization: each config, composed
as `ssmbench train task=<name>` composes it and loaded on its fixture, gives examples of the published
length, vocabulary and classes, with pixels normalized by the published constants.

Sources: S4 release (github.com/state-spaces/s4, src/dataloaders/basic.py and lra.py): sCIFAR
mean (0.4914, 0.4822, 0.4465) / std (0.247, 0.243, 0.261), LRA Image 122.6 / 255 and 61.0 / 255,
Pathfinder 0.5 / 0.5, ListOps padded to 2048, Text 4096, Retrieval 4000 per document; sMNIST: the MNIST
train-set statistics 0.1307 / 0.3081 the config states.
"""

import pytest
import torch

from ssmbench.build import build_task
from tests.compose import composed
from tests.task_fixtures import FIXTURES

PIXEL_TASKS = {  # task: (seq_len, d_input, n_classes, mean, std)
    "smnist": (784, 1, 10, [0.1307], [0.3081]),
    "psmnist": (784, 1, 10, [0.1307], [0.3081]),
    "scifar": (1024, 3, 10, [0.4914, 0.4822, 0.4465], [0.247, 0.243, 0.261]),
    "image": (1024, 1, 10, [122.6 / 255], [61.0 / 255]),
    "pathfinder": (1024, 1, 2, [0.5], [0.5]),
    "pathx": (16384, 1, 2, [0.5], [0.5]),
}
TOKEN_TASKS = {  # task: (seq_len, vocab_size, n_classes, paired)
    "listops": (2048, 16, 10, False),
    "text": (4096, 257, 2, False),
    "retrieval": (4000, 257, 2, True),
}


def load(task, tmp_path):
    """The datamodule of conf/task/<task>.yaml, prepared and set up on the task's fixture."""
    FIXTURES[task](tmp_path)
    with composed(f"task={task}", f"paths.data_dir={tmp_path}") as cfg:
        return build_task(cfg)


@pytest.mark.parametrize("task", PIXEL_TASKS)
def test_pixel_tasks_have_the_published_length_and_normalization(task, tmp_path):
    seq_len, d_input, n_classes, mean, std = PIXEL_TASKS[task]
    dm = load(task, tmp_path)
    assert (dm.seq_len, dm.d_input, dm.n_classes, dm.vocab_size) == (seq_len, d_input, n_classes, None)
    ds = dm.test_set
    x, _ = ds[0]
    raw = ds.pixels[ds.index[0]].float()  # (L, C) in raster order, as decoded
    if task == "psmnist":  # one fixed permutation of the steps, the same for every run
        assert ds.permutation is not None and not torch.equal(ds.permutation, torch.arange(seq_len))
        raw = raw[ds.permutation]
    expected = (raw / 255 - torch.tensor(mean)) / torch.tensor(std)
    assert x.shape == (seq_len, d_input) and torch.allclose(x, expected, atol=1e-3)


@pytest.mark.parametrize("task", TOKEN_TASKS)
def test_token_tasks_have_the_published_length_and_vocabulary(task, tmp_path):
    seq_len, vocab_size, n_classes, paired = TOKEN_TASKS[task]
    dm = load(task, tmp_path)
    assert (dm.seq_len, dm.vocab_size, dm.n_classes, dm.paired, dm.d_input) == (seq_len, vocab_size, n_classes,
                                                                                paired, None)
    x, y, n = dm.train_set[0]
    assert x.shape == ((2, seq_len) if paired else (seq_len,)) and 0 <= int(y) < n_classes
