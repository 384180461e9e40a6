"""Parity, modular sum and the permutation word problem: every label is re-derived from the tokens by a plain Python
loop over the definition, written independently of the generators; plus lengths, seeding, errors and the configs."""

import itertools
import math

import pytest
import torch
from hydra.utils import instantiate

from ssmbench.data.base import IGNORE_INDEX
from ssmbench.data.synthetic.modular_sum import ModularSumDataModule, modular_sum_states
from ssmbench.data.synthetic.permutation import (
    PermutationDataModule,
    permutation_index,
    permutation_states,
    permutations,
)
from ssmbench.data.synthetic.state_tracking import state_tracking_examples
from tests.compose import composed
from tests.helpers import train


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def modular_dm(**kw):
    args = dict(name="modular_sum", modulus=5, seq_len=12, n_classes=5, vocab_size=5, target="token", causal=True,
                n_train=40, n_val=10, n_test=10, seed=3)
    args.update(kw)
    return ModularSumDataModule(**args)


def permutation_dm(**kw):
    args = dict(name="permutation", n_elements=4, seq_len=12, n_classes=24, vocab_size=24, target="token",
                causal=True, n_train=40, n_val=10, n_test=10, seed=3)
    args.update(kw)
    return PermutationDataModule(**args)


def set_up(dm):
    dm.setup()
    return dm


# ---------------------------------------------------------------- labels against the definitions


def test_parity_labels_are_the_running_xor():
    n, seq_len = 200, 23
    x, y, lengths = state_tracking_examples(n, seq_len, 2, (seq_len, seq_len), lambda t: modular_sum_states(t, 2),
                                            gen())
    assert x.shape == y.shape == (n, seq_len) and x.dtype == y.dtype == lengths.dtype == torch.long
    assert lengths.tolist() == [seq_len] * n
    for xs, ys in zip(x.tolist(), y.tolist()):
        assert set(xs) <= {0, 1}
        parity = 0
        for bit, label in zip(xs, ys):
            parity ^= bit
            assert label == parity


@pytest.mark.parametrize("modulus", [3, 5, 7])
def test_modular_sum_labels_are_the_running_sum_mod_m(modulus):
    dm = set_up(modular_dm(modulus=modulus, vocab_size=modulus, n_classes=modulus, seq_len=17))
    for split in (dm.train_set, dm.val_set, dm.test_set):
        x, y, _ = split.tensors
        assert x.shape == y.shape == (len(split), 17)
        for xs, ys in zip(x.tolist(), y.tolist()):
            total = 0
            for token, label in zip(xs, ys):
                assert 0 <= token < modulus
                total = (total + token) % modulus
                assert label == total


def test_tokens_and_states_are_uniform():
    # Uniform tokens make every state uniform too (a random walk on Z_5 started anywhere): chance is 1/5.
    x, y, _ = state_tracking_examples(4000, 16, 5, (16, 16), lambda x: modular_sum_states(x, 5), gen(1))
    for values in (x, y[:, 1:]):
        freq = torch.bincount(values.flatten(), minlength=5).double() / values.numel()
        assert torch.allclose(freq, torch.full((5,), 0.2, dtype=torch.double), atol=0.01)


def test_permutations_are_listed_in_lexicographic_order():
    for n in (2, 3, 4, 5):
        listed = [tuple(row) for row in permutations(n).tolist()]
        every = [p for p in itertools.product(range(n), repeat=n) if len(set(p)) == n]  # already lexicographic
        assert listed == every and len(listed) == math.factorial(n)
    assert permutations(5)[0].tolist() == [0, 1, 2, 3, 4]  # token 0 is the identity


def test_permutation_index_inverts_the_listing():
    perms = permutations(5)
    order = torch.randperm(120, generator=gen())
    assert torch.equal(permutation_index(perms[order], perms), order)
    assert torch.equal(permutation_index(perms[order].reshape(8, 15, 5), perms), order.reshape(8, 15))


def compose_loop(tokens, n, left_to_right=True):
    """Indices of x_1 o ... o x_t (or, with left_to_right=False, x_t o ... o x_1) with (p o q)(i) = p(q(i)),
    by composing tuples."""
    listed = list(itertools.permutations(range(n)))
    state, labels = tuple(range(n)), []
    for token in tokens:
        p = listed[token]
        if left_to_right:
            state = tuple(state[p[i]] for i in range(n))
        else:
            state = tuple(p[state[i]] for i in range(n))
        labels.append(listed.index(state))
    return labels


@pytest.mark.parametrize("n", [3, 5])
def test_permutation_labels_are_the_composition_x1_o_dots_o_xt(n):
    x = torch.randint(0, math.factorial(n), (60, 19), generator=gen(n))
    y = permutation_states(x, permutations(n))
    assert y.shape == x.shape and y.dtype == torch.long
    expected = [compose_loop(xs, n) for xs in x.tolist()]
    assert y.tolist() == expected
    # The order is not a convention that could go either way unnoticed: the other order gives other labels.
    other = torch.tensor([compose_loop(xs, n, left_to_right=False) for xs in x.tolist()])
    assert (other != y)[:, 1:].float().mean() > 0.5


def test_permutation_task_generates_the_word_problem():
    dm = set_up(permutation_dm(n_elements=3, vocab_size=6, n_classes=6, seq_len=9))
    x, y, _ = dm.train_set.tensors
    assert x.min() >= 0 and x.max() < 6
    assert y.tolist() == [compose_loop(xs, 3) for xs in x.tolist()]


# ---------------------------------------------------------------- lengths


def test_lengths_per_split_pad_with_identity_and_ignored_labels():
    # Validation draws its lengths like training (the best checkpoint is chosen on trained lengths); only the test
    # split takes test_lengths.
    dm = set_up(modular_dm(seq_len=20, train_lengths=[3, 10], test_lengths=[11, 20], n_train=600, n_val=300,
                           n_test=300))
    for split, (lo, hi) in ((dm.train_set, (3, 10)), (dm.val_set, (3, 10)), (dm.test_set, (11, 20))):
        x, y, lengths = split.tensors
        assert x.shape == y.shape == (len(split), 20)
        assert set(lengths.tolist()) == set(range(lo, hi + 1))  # uniform over the range: every length occurs
        for xs, ys, length in zip(x.tolist(), y.tolist(), lengths.tolist()):
            assert xs[length:] == [0] * (20 - length)
            assert ys[length:] == [IGNORE_INDEX] * (20 - length)
            assert ys[:length] == [sum(xs[: t + 1]) % 5 for t in range(length)]


@pytest.mark.parametrize("make", [modular_dm, permutation_dm])
def test_score_from_ignores_the_early_test_labels_only(make):
    options = dict(seq_len=12, train_lengths=[2, 5], test_lengths=[4, 12], n_train=50, n_val=30, n_test=200)
    every, unseen = set_up(make(**options)), set_up(make(score_from=6, **options))
    for name in ("train_set", "val_set"):  # training and validation keep every label
        for a, b in zip(getattr(every, name).tensors, getattr(unseen, name).tensors):
            assert torch.equal(a, b)
    (x, y, lengths), (x6, y6, lengths6) = every.test_set.tensors, unseen.test_set.tensors
    assert torch.equal(x, x6) and torch.equal(lengths, lengths6)  # the same examples, read in full
    assert (y6[:, :5] == IGNORE_INDEX).all()  # s_1 .. s_5: the positions training reached
    assert torch.equal(y6[:, 5:], y[:, 5:]) and (y[:, :4] != IGNORE_INDEX).all()  # every test length is >= 4
    scored = (y6 != IGNORE_INDEX).sum(1)
    assert torch.equal(scored, (lengths - 5).clamp(min=0))  # length 4 or 5: nothing left to score
    assert scored.sum() > 0 and (scored == 0).any()


def test_a_batch_carries_the_lengths():
    dm = set_up(permutation_dm(train_lengths=[2, 12], batch_size=8))
    x, y, lengths = next(iter(dm.train_dataloader()))
    assert x.shape == y.shape == (8, 12) and lengths.shape == (8,)
    assert torch.equal((y != IGNORE_INDEX).sum(1), lengths)


# ---------------------------------------------------------------- seeding


@pytest.mark.parametrize("make", [modular_dm, permutation_dm])
def test_same_seed_same_data_other_seed_other_data(make):
    a, b, c = set_up(make()), set_up(make()), set_up(make(seed=4))
    for i in range(3):
        assert torch.equal(a.train_set.tensors[i], b.train_set.tensors[i])
        assert torch.equal(a.test_set.tensors[i], b.test_set.tensors[i])
    assert not torch.equal(a.train_set.tensors[0][:10], a.val_set.tensors[0])
    assert not torch.equal(a.val_set.tensors[0], a.test_set.tensors[0])
    assert not torch.equal(a.train_set.tensors[0], c.train_set.tensors[0])


# ---------------------------------------------------------------- errors


def test_bad_options_raise_one_line_errors():
    cases = [
        (lambda: modular_dm(modulus=1, vocab_size=1, n_classes=1), "task modular_sum: modulus=1 must be at least 2"),
        (lambda: modular_dm(vocab_size=6), "vocab_size and n_classes must equal modulus = 5 .*got 6 and 5"),
        (lambda: modular_dm(seq_len=0), "task modular_sum: seq_len=0 must be at least 1"),
        (lambda: modular_dm(train_lengths=[0, 5]), "train_lengths=\\[0, 5\\] must be \\[shortest, longest\\]"),
        (lambda: modular_dm(train_lengths=[6, 5]), "train_lengths=\\[6, 5\\] must be"),
        (lambda: modular_dm(test_lengths=[3, 13]), "test_lengths=\\[3, 13\\] must be .* <= seq_len = 12"),
        (lambda: modular_dm(test_lengths=[4]), "test_lengths=\\[4\\] must be \\[shortest, longest\\]"),
        (lambda: modular_dm(score_from=0), "score_from=0 must be a position in \\[1, 12\\] .*or null"),
        (lambda: modular_dm(test_lengths=[3, 8], score_from=9), "score_from=9 must be a position in \\[1, 8\\]"),
        (lambda: modular_dm(score_from=True), "score_from=True must be a position"),
        (lambda: permutation_dm(n_elements=1, vocab_size=1, n_classes=1),
         "task permutation: n_elements=1 must be at least 2"),
        (lambda: permutation_dm(n_elements=9, vocab_size=362880, n_classes=362880),
         "task permutation: n_elements=9 must be at most 8: the task has n_elements! tokens and classes, 362880 for 9"),
        (lambda: permutation_dm(n_elements=3), "must be n_elements! = 6 .*got 24 and 24; set task.vocab_size=6"),
    ]
    for make, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            make()
        assert "\n" not in str(error.value)


# ---------------------------------------------------------------- configs


@pytest.mark.parametrize("task, vocab_size, seq_len", [("parity", 2, 64), ("modular_sum", 5, 64),
                                                       ("permutation", 120, 32)])
def test_task_config_metadata(task, vocab_size, seq_len):
    with composed(f"task={task}", "task.n_train=8", "task.n_val=4", "task.n_test=4") as cfg:
        dm = set_up(instantiate(cfg.task))
    assert dm.name == task and dm.target == "token" and dm.causal is True and dm.d_input is None
    assert dm.vocab_size == dm.n_classes == vocab_size and dm.seq_len == seq_len
    x, y, lengths = dm.train_set.tensors
    assert x.shape == y.shape == (8, seq_len) and lengths.tolist() == [seq_len] * 8
    assert x.min() >= 0 and x.max() < vocab_size and y.min() >= 0 and y.max() < vocab_size


def test_parity_has_no_modulus_option():
    from ssmbench.data.synthetic.modular_sum import ParityDataModule

    with composed("task=parity", "task.n_train=8", "task.n_val=4", "task.n_test=4") as cfg:
        options = dict(cfg.task)
    options.pop("_target_")
    assert set_up(ParityDataModule(**options)).modulus == 2
    with pytest.raises(TypeError, match="modulus"):
        ParityDataModule(modulus=3, **options)


def test_parity_config_takes_the_published_lengths():
    # Grazzi et al. 2025: train on lengths 3..40, test on 40..256; the command in conf/task/parity.yaml.
    with composed("task=parity", "task.seq_len=256", "task.train_lengths=[3,40]", "task.test_lengths=[40,256]",
                  "task.score_from=41", "task.n_train=400", "task.n_val=400", "task.n_test=400") as cfg:
        dm = set_up(instantiate(cfg.task))
    assert (dm.train_lengths, dm.test_lengths, dm.score_from) == ((3, 40), (40, 256), 41)
    for split in (dm.train_set, dm.val_set):
        lengths = split.tensors[2]
        assert (lengths.min(), lengths.max()) == (3, 40)
    _, y, test_lengths = dm.test_set.tensors
    assert test_lengths.min() >= 40 and test_lengths.max() <= 256 and test_lengths.float().std() > 50
    assert (y[:, :40] == IGNORE_INDEX).all() and torch.equal((y != IGNORE_INDEX).sum(1), test_lengths - 40)


def test_smaller_permutation_group_from_the_command_line():
    with composed("task=permutation", "task.n_elements=3", "task.n_train=8", "task.n_val=4", "task.n_test=4") as cfg:
        dm = set_up(instantiate(cfg.task))
    assert dm.vocab_size == dm.n_classes == 6
    assert dm.train_set.tensors[0].max() < 6


# ---------------------------------------------------------------- training


@pytest.mark.slow
def test_gru_learns_parity_and_extrapolates_to_longer_sequences(tmp_path, monkeypatch):
    """128 steps of a small GRU trained (and validated) on lengths 2..16: on test lengths 17..32, scored at the
    unseen positions 17..32 only (score_from=17), its test accuracy is 1.0 (seeds 0, 1, 2; 12 to 18 s; chance is
    1/2). One intra-op thread, as in tests/test_deltanet.py::test_train_on_copy_learns."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    results = train(tmp_path / "run", "model=gru", "task=parity", "model.d_model=32", "model.n_layers=1",
                    "task.seq_len=32", "task.train_lengths=[2,16]", "task.test_lengths=[17,32]", "task.score_from=17",
                    "task.n_train=1024", "task.n_val=256", "task.n_test=256", "task.batch_size=32",
                    "trainer.max_epochs=4", "optimizer.lr=1e-2", "print_config=false")
    assert results["status"] == "completed"
    assert results["metrics"]["test/acc"] > 0.95
