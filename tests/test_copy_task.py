import pytest
import torch

from ssmbench.data.base import IGNORE_INDEX
from ssmbench.data.synthetic.copy import CopyDataModule, copy_examples
from ssmbench.errors import TaskDataError


def test_copy_targets_are_the_first_symbols_at_the_end():
    x, y = copy_examples(50, seq_len=30, n_symbols=5, n_copy=4, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (50, 30)
    assert torch.equal(y[:, -4:], x[:, :4])
    assert (y[:, :-4] == IGNORE_INDEX).all()
    assert (x[:, 30 - 4 - 1] == 6).all()
    assert ((x[:, :4] >= 1) & (x[:, :4] <= 5)).all()
    assert (x[:, 4:25] == 0).all() and (x[:, -4:] == 0).all()


def dm(**kw):
    args = dict(name="copy", seq_len=20, n_classes=7, vocab_size=7, target="token", n_symbols=5, n_copy=3,
                n_train=30, n_val=10, n_test=10, seed=3)
    args.update(kw)
    return CopyDataModule(**args)


def test_same_seed_same_data_and_splits_differ():
    a, b = dm(), dm()
    a.setup(), b.setup()
    assert torch.equal(a.train_set.tensors[0], b.train_set.tensors[0])
    assert not torch.equal(a.train_set.tensors[0][:10], a.val_set.tensors[0])
    c = dm(seed=4)
    c.setup()
    assert not torch.equal(a.train_set.tensors[0], c.train_set.tensors[0])


def test_inconsistent_metadata_is_an_error():
    with pytest.raises(ValueError, match="vocab_size must be n_symbols \\+ 2"):
        dm(vocab_size=9)
    bad = dm(n_classes=4)
    with pytest.raises(TaskDataError, match="labels outside"):
        bad.setup()
    with pytest.raises(ValueError, match="seq_len=6 must be at least"):
        dm(seq_len=6).setup()
