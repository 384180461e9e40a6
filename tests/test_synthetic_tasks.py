"""Selective copy, MQAR and induction heads: every target is re-derived from the inputs by plain Python
written independently of the generators, plus the metadata and determinism every task must have."""

import pytest
import torch

from ssmbench.data.base import IGNORE_INDEX
from ssmbench.data.synthetic.induction import InductionDataModule, induction_examples
from ssmbench.data.synthetic.mqar import MQARDataModule, mqar_examples
from ssmbench.data.synthetic.selective_copy import SelectiveCopyDataModule, selective_copy_examples
from ssmbench.errors import TaskDataError
from tests.compose import composed


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def set_up(*dms):
    """The data modules after setup(), in order."""
    for dm in dms:
        dm.setup()
    return dms


# ---------------------------------------------------------------- selective copy


def test_selective_copy_targets_are_the_scattered_symbols_in_order():
    n, seq_len, n_symbols, n_copy = 300, 40, 6, 5
    x, y = selective_copy_examples(n, seq_len, n_symbols, n_copy, gen())
    assert x.shape == y.shape == (n, seq_len) and x.dtype == y.dtype == torch.long
    delim = n_symbols + 1
    context = seq_len - n_copy - 1
    positions_seen = []
    for xs, ys in zip(x.tolist(), y.tolist()):
        assert xs.count(delim) == 1 and xs.index(delim) == context
        scattered = [(t, tok) for t, tok in enumerate(xs[:context]) if tok != 0]
        assert len(scattered) == n_copy
        assert all(1 <= tok <= n_symbols for _, tok in scattered)
        assert xs[context + 1 :] == [0] * n_copy
        assert ys[-n_copy:] == [tok for _, tok in scattered]
        assert ys[:-n_copy] == [IGNORE_INDEX] * (seq_len - n_copy)
        positions_seen += [t for t, _ in scattered]
    # Positions are spread over the whole context (not a plain copy of a fixed prefix).
    assert min(positions_seen) == 0 and max(positions_seen) == context - 1
    mean = sum(positions_seen) / len(positions_seen)
    assert abs(mean - (context - 1) / 2) < 1.0


def sc_dm(**kw):
    args = dict(name="selective_copy", seq_len=30, n_classes=7, vocab_size=7, target="token", n_symbols=5,
                n_copy=4, n_train=40, n_val=10, n_test=10, seed=3)
    args.update(kw)
    return SelectiveCopyDataModule(**args)


def assert_seeded(make) -> None:
    """`make(**kw)` builds a task: the same seed gives the same data, another seed other data, and the
    validation split is not a copy of the training split."""
    a, b, c = set_up(make(), make(), make(seed=4))
    assert torch.equal(a.train_set.tensors[0], b.train_set.tensors[0])
    assert torch.equal(a.test_set.tensors[1], b.test_set.tensors[1])
    assert not torch.equal(a.train_set.tensors[0][:10], a.val_set.tensors[0])
    assert not torch.equal(a.train_set.tensors[0], c.train_set.tensors[0])


def test_selective_copy_determinism_and_errors():
    assert_seeded(sc_dm)
    with pytest.raises(ValueError, match="vocab_size must be n_symbols \\+ 2"):
        sc_dm(vocab_size=9)
    with pytest.raises(ValueError, match="seq_len=8 must be at least"):
        sc_dm(seq_len=8).setup()
    with pytest.raises(TaskDataError, match="labels outside"):
        sc_dm(n_classes=3).setup()


# ---------------------------------------------------------------- MQAR


def test_mqar_labels_are_the_values_of_the_queried_keys():
    n, seq_len, vocab, k = 200, 48, 64, 6
    x, y = mqar_examples(n, seq_len, vocab, k, alpha=0.01, noise=False, generator=gen())
    assert x.shape == y.shape == (n, seq_len)
    for xs, ys in zip(x.tolist(), y.tolist()):
        keys, values = xs[0 : 2 * k : 2], xs[1 : 2 * k : 2]
        assert len(set(keys)) == k and all(1 <= key < vocab // 2 for key in keys)
        assert len(set(values)) == k and all(vocab // 2 <= v < vocab for v in values)
        lookup = dict(zip(keys, values))
        labelled = [t for t, label in enumerate(ys) if label != IGNORE_INDEX]
        assert len(labelled) == k
        assert sorted(xs[t] for t in labelled) == sorted(keys)  # every key queried exactly once
        for t in labelled:
            assert t >= 2 * k and (t - 2 * k) % 2 == 0
            assert ys[t] == lookup[xs[t]]
        # Without noise everything else in the query region is 0.
        assert all(xs[t] == 0 for t in range(2 * k, seq_len) if t not in labelled)


def test_mqar_noise_fills_the_query_region_with_random_tokens():
    n, seq_len, vocab, k = 100, 40, 32, 4
    x, y = mqar_examples(n, seq_len, vocab, k, alpha=0.5, noise=True, generator=gen(1))
    filler = x[:, 2 * k :][y[:, 2 * k :] == IGNORE_INDEX]
    assert filler.min() >= 0 and filler.max() < vocab
    assert len(filler.unique()) > vocab // 2  # uniform over the vocabulary, not a constant
    # The context is untouched and every label is still the value paired with its query key.
    for xs, ys in zip(x.tolist(), y.tolist()):
        lookup = dict(zip(xs[0 : 2 * k : 2], xs[1 : 2 * k : 2]))
        assert all(label == lookup[xs[t]] for t, label in enumerate(ys) if label != IGNORE_INDEX)


@pytest.mark.parametrize("alpha", [0.01, 0.5, 1.0])
def test_mqar_query_gaps_follow_the_power_law(alpha):
    # One query per example: its gap g (query at position 2 + 2 g) has P(g) = (g + 1)^(alpha - 1) / Z.
    n, seq_len, vocab = 20000, 22, 16
    x, y = mqar_examples(n, seq_len, vocab, 1, alpha=alpha, noise=False, generator=gen(2))
    space = (seq_len - 2) // 2
    pos = (y != IGNORE_INDEX).float().argmax(dim=1)
    counts = torch.bincount((pos - 2) // 2, minlength=space).double() / n
    weights = [(g + 1) ** (alpha - 1) for g in range(space)]
    expected = torch.tensor([w / sum(weights) for w in weights], dtype=torch.double)
    assert torch.allclose(counts, expected, atol=0.012)


def mq_dm(**kw):
    args = dict(name="mqar", seq_len=32, n_classes=64, vocab_size=64, target="token", causal=True,
                num_kv_pairs=4, n_train=40, n_val=10, n_test=10, seed=3)
    args.update(kw)
    return MQARDataModule(**args)


def test_mqar_determinism_and_errors():
    assert_seeded(mq_dm)
    with pytest.raises(ValueError, match="n_classes must equal vocab_size"):
        mq_dm(n_classes=32)
    with pytest.raises(ValueError, match="seq_len=12 must be at least 4 \\* num_kv_pairs = 16"):
        mq_dm(seq_len=12).setup()
    with pytest.raises(ValueError, match="use vocab_size >= 10"):
        mq_dm(vocab_size=8, n_classes=8).setup()
    with pytest.raises(ValueError, match="alpha=0.0 must be positive"):
        mq_dm(alpha=0.0).setup()


# ---------------------------------------------------------------- induction heads


def test_induction_label_is_the_token_after_the_first_trigger():
    n, seq_len, n_symbols = 500, 20, 7
    x, y = induction_examples(n, seq_len, n_symbols, gen())
    assert x.shape == y.shape == (n, seq_len)
    trigger = n_symbols
    firsts = []
    for xs, ys in zip(x.tolist(), y.tolist()):
        assert xs.count(trigger) == 2 and xs[-1] == trigger
        first = xs.index(trigger)
        assert all(0 <= tok < n_symbols for t, tok in enumerate(xs) if t not in (first, seq_len - 1))
        assert ys[-1] == xs[first + 1]
        assert ys[:-1] == [IGNORE_INDEX] * (seq_len - 1)
        firsts.append(first)
    assert set(firsts) == set(range(seq_len - 2))  # the first trigger can sit anywhere it leaves room


def ind_dm(**kw):
    args = dict(name="induction", seq_len=16, n_classes=6, vocab_size=6, target="token", n_symbols=5,
                n_train=40, n_val=10, n_test=10, seed=3)
    args.update(kw)
    return InductionDataModule(**args)


def test_induction_determinism_and_errors():
    a, b, c = set_up(ind_dm(), ind_dm(), ind_dm(seed=4))
    assert torch.equal(a.train_set.tensors[0], b.train_set.tensors[0])
    assert not torch.equal(a.train_set.tensors[0], c.train_set.tensors[0])
    with pytest.raises(ValueError, match="vocab_size must be n_symbols \\+ 1"):
        ind_dm(vocab_size=5)
    with pytest.raises(ValueError, match="seq_len=2 must be at least 3"):
        ind_dm(seq_len=2).setup()


# ---------------------------------------------------------------- configs


@pytest.mark.parametrize(
    "task, causal, vocab_size",
    [("selective_copy", False, 10), ("mqar", True, 512), ("induction", False, 16)],
)
def test_task_config_metadata(task, causal, vocab_size):
    with composed(f"task={task}", "task.n_train=8", "task.n_val=4", "task.n_test=4") as cfg:
        from hydra.utils import instantiate

        dm = instantiate(cfg.task)
        dm.setup()
    assert dm.name == task and dm.target == "token" and dm.causal is causal
    assert dm.vocab_size == dm.n_classes == vocab_size
    x, y = dm.train_set.tensors
    assert x.shape == y.shape == (8, dm.seq_len)
    assert x.min() >= 0 and x.max() < dm.vocab_size
