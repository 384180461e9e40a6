"""The MAD tasks (Poli et al. 2024): every label is re-derived from the tokens by plain Python written
independently of the generators, plus the configs, determinism, longer test splits, bad arguments and one
end-to-end run that learns in-context recall."""

from collections import Counter

import pytest
import torch
from hydra.utils import instantiate

from ssmbench.data.base import IGNORE_INDEX
from ssmbench.data.synthetic.mad_memory import (
    MADCompressionDataModule, MADMemorizationDataModule, compression_examples, memorization_examples,
    memorization_map,
)
from ssmbench.data.synthetic.mad_recall import (
    MADFuzzyRecallDataModule, MADRecallDataModule, fuzzy_recall_examples, in_context_recall_examples,
)
from tests.compose import composed
from tests.helpers import train

I = IGNORE_INDEX


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- in-context recall (and noisy)


def check_recall_example(xs, ys, vocab, noise_vocab, scored):
    """Walk the pairs of one example and return how many were noise. Asserts the token ranges, that a key keeps
    its first value, that the last pair is a key seen before, and the labels (`scored`: the evaluation labels,
    else the next-token ones)."""
    content = vocab - noise_vocab
    n_keys, L = content // 2, len(xs)
    stream = xs + ([ys[-1]] if L % 2 else [])  # odd L: the probe's value is only a label
    value_of, expected, n_noise = {}, [I] * L, 0
    for j in range(0, len(stream), 2):
        k, v = stream[j], stream[j + 1]
        last = j == len(stream) - 2
        if k >= content:
            assert content <= v < vocab and not last  # noise comes in pairs, never as the probe
            n_noise += 1
            continue
        assert 0 <= k < n_keys <= v < content
        assert k in value_of or not last
        if k in value_of:
            expected[j] = v
        assert value_of.setdefault(k, v) == v
    if scored:
        assert ys == expected
    else:
        assert ys[: L - 1] == xs[1:] and ys[-1] == (stream[L] if L % 2 else I)
    return n_noise


@pytest.mark.parametrize("seq_len", [40, 41, 3, 4])
@pytest.mark.parametrize("scored", [True, False], ids=["eval", "train"])
def test_recall_labels_are_the_values_of_repeated_keys(seq_len, scored):
    n, vocab = 300, 16
    x, y = in_context_recall_examples(n, seq_len, vocab, 0, 0.0, not scored, gen())
    assert x.shape == y.shape == (n, seq_len) and x.dtype == y.dtype == torch.long
    for xs, ys in zip(x.tolist(), y.tolist()):
        assert check_recall_example(xs, ys, vocab, 0, scored) == 0
    if scored and seq_len >= 40:
        # Most keys repeat in a 20-pair stream over 8 keys: about 2/3 of the key positions are scored.
        assert 0.5 < (y[:, 0::2] != I).float().mean() < 0.8


def test_recall_train_and_eval_examples_share_the_draws():
    x_train, y_train = in_context_recall_examples(50, 33, 16, 0, 0.0, True, gen(5))
    x_eval, y_eval = in_context_recall_examples(50, 33, 16, 0, 0.0, False, gen(5))
    assert torch.equal(x_train, x_eval)
    scored = y_eval != I
    assert torch.equal(y_train[scored], y_eval[scored])


def test_noisy_recall_replaces_pairs_by_noise_at_frac_noise():
    n, seq_len, vocab, noise_vocab, frac = 2000, 32, 32, 16, 0.3
    x, y = in_context_recall_examples(n, seq_len, vocab, noise_vocab, frac, False, gen(1))
    noise_pairs = sum(check_recall_example(xs, ys, vocab, noise_vocab, True) for xs, ys in zip(x.tolist(), y.tolist()))
    pairs = seq_len // 2
    # Every pair but the probe and one kept pair is noise with probability frac.
    expected = frac * (pairs - 2) / (pairs - 1)
    assert abs(noise_pairs / (n * (pairs - 1)) - expected) < 0.01
    noise = x[x >= 16]
    assert len(noise.unique()) == noise_vocab  # uniform over the noise vocabulary


def test_recall_probe_is_uniform_over_the_keys_seen():
    # seq_len 5: two context pairs and the probe key (its value is the label at the last position).
    n = 20000
    x, y = in_context_recall_examples(n, 5, 16, 0, 0.0, False, gen(2))
    distinct = x[:, 0] != x[:, 2]
    probe_is_first = (x[:, 4] == x[:, 0])[distinct].float().mean().item()
    assert abs(probe_is_first - 0.5) < 0.015
    assert torch.equal(y[:, 4], torch.where(x[:, 4] == x[:, 0], x[:, 1], x[:, 3]))
    # Keys and each key's value are uniform.
    assert abs((x[:, 0] == 3).float().mean().item() - 1 / 8) < 0.01
    assert abs((x[:, 1] == 12).float().mean().item() - 1 / 8) < 0.01


def test_recall_errors():
    with pytest.raises(ValueError, match="task mad_recall: seq_len=2 must be at least 3"):
        in_context_recall_examples(1, 2, 16, 0, 0.0, True, gen())
    with pytest.raises(ValueError, match="task mad_recall: frac_noise=0.2 needs noise tokens"):
        in_context_recall_examples(1, 8, 16, 0, 0.2, True, gen())
    with pytest.raises(ValueError, match="frac_noise=1.0 must be in \\[0, 1\\)"):
        in_context_recall_examples(1, 8, 32, 16, 1.0, True, gen())
    with pytest.raises(ValueError, match="must leave at least 2 tokens"):
        in_context_recall_examples(1, 8, 16, 15, 0.1, True, gen())


# ---------------------------------------------------------------- fuzzy in-context recall


def runs(stream, n_keys, pad):
    """The alternating key and value motifs of a stream without its padding (keys < n_keys <= values < pad)."""
    out = []
    for tok in stream:
        kind = tok < n_keys
        if out and out[-1][0] == kind:
            out[-1][1].append(tok)
        else:
            out.append((kind, [tok]))
    assert all(tok != pad for tok in stream) and [kind for kind, _ in out] == [True, False] * (len(out) // 2)
    return [(tuple(out[i][1]), tuple(out[i + 1][1])) for i in range(0, len(out), 2)]


@pytest.mark.parametrize("seq_len", [64, 41, 11])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_fuzzy_recall_motifs_and_labels(seq_len, train):
    n, vocab, k_size, v_size = 300, 16, 3, 3
    pad, n_keys = vocab - 1, 7
    x, y = fuzzy_recall_examples(n, seq_len, vocab, k_size, v_size, train, train, gen(3))
    assert x.shape == y.shape == (n, seq_len) and x.dtype == y.dtype == torch.long
    key_sizes, value_sizes, probe_at = Counter(), Counter(), []
    for xs, ys in zip(x.tolist(), y.tolist()):
        padding = next(t for t, tok in enumerate(xs) if tok != pad)
        assert padding < 2 * (k_size + v_size)  # pairs are added while the largest pair still fits
        assert ys[: max(padding - 1, 0)] == [I] * max(padding - 1, 0)
        labelled = [t for t, label in enumerate(ys) if label != I]
        stream = xs[padding:] + [ys[-1]]  # the stream's last token is only a label
        pairs = runs(stream, n_keys, pad)
        value_of, seen, expected = {}, set(), [I] * padding
        for key, value in pairs:
            assert len(set(key)) == len(key) <= k_size and len(set(value)) == len(value) <= v_size
            assert train or len(key) == k_size
            assert value_of.setdefault(key, value) == value
            expected += [I] * len(key) + (list(value) if key in seen else [I] * len(value))
            seen.add(key)
            key_sizes[len(key)] += 1
            value_sizes[len(value)] += 1
        assert sum(key == pairs[-1][0] for key, _ in pairs) >= 2  # the probe pair occurs in the context
        if len(pairs) > 2:  # the probe's first pair among the len(pairs) - 2 slots of the context
            probe_at.append([key for key, _ in pairs].index(pairs[-1][0]) / (len(pairs) - 2))
        assert ys == (([I] * padding + stream)[1:] if train else expected[1:])
        if not train:
            n_value = len(pairs[-1][1])
            assert labelled[-n_value:] == list(range(seq_len - n_value, seq_len))
    assert set(value_sizes) == {1, 2, 3}
    assert set(key_sizes) == ({1, 2, 3} if train else {3})
    if seq_len > 11:  # the probe pair sits anywhere in the context (uniform, or earlier where its key recurs)
        assert min(probe_at) == 0 and max(probe_at) == 1 and 0.4 < sum(probe_at) / len(probe_at) < 0.6


def test_fuzzy_recall_repeats_are_scored_with_every_value_token():
    x, y = fuzzy_recall_examples(200, 128, 10, 2, 2, False, False, gen(4))
    # 4 keys give 12 key motifs of 2 tokens: repeats are frequent and every labelled value token follows
    # the token before it in the stream.
    scored = y[:, :-1] != I
    assert scored.sum() > 200 * 20
    assert torch.equal(y[:, :-1][scored], x[:, 1:][scored])


def test_fuzzy_recall_errors():
    with pytest.raises(ValueError, match="seq_len=10 must be at least 2 .* - 1 = 11 \\(the probe pair twice\\)"):
        fuzzy_recall_examples(1, 10, 16, 3, 3, True, True, gen())
    with pytest.raises(ValueError, match="use vocab_size >= 7"):
        fuzzy_recall_examples(1, 64, 6, 3, 3, True, True, gen())
    with pytest.raises(ValueError, match="k_motif_size=0 and v_motif_size=3 must be at least 1"):
        fuzzy_recall_examples(1, 64, 16, 0, 3, True, True, gen())


# ---------------------------------------------------------------- memorization and compression


@pytest.mark.parametrize("seq_len", [32, 9])
def test_memorization_labels_are_the_fixed_map(seq_len):
    vocab = 20
    value_of_key = memorization_map(vocab, seed=7)
    assert sorted(value_of_key.tolist()) == sorted(set(value_of_key.tolist()))  # distinct values
    assert all(9 <= v < 19 for v in value_of_key.tolist()) and len(value_of_key) == 9
    x, y = memorization_examples(500, seq_len, vocab, value_of_key, gen())
    assert x.shape == y.shape == (500, seq_len)
    lookup = value_of_key.tolist()
    for xs, ys in zip(x.tolist(), y.tolist()):
        assert all(0 <= xs[t] < 9 for t in range(0, seq_len, 2))
        assert all(xs[t] == vocab - 1 for t in range(1, seq_len, 2))
        assert ys == [lookup[xs[t - 1]] if t % 2 else I for t in range(seq_len)]
    assert set(x[:, 0::2].flatten().tolist()) == set(range(9))


def test_memorization_map_depends_only_on_the_seed_and_is_shared_by_the_splits():
    def dm(seed):
        return MADMemorizationDataModule(name="mad_memorization", seq_len=16, test_seq_len=24, vocab_size=64,
                                         n_classes=64, target="token", n_train=64, n_val=64, n_test=64, seed=seed)

    a, b, c = dm(3), dm(3), dm(4)
    for m in (a, b, c):
        m.setup()
    assert torch.equal(a.value_of_key, b.value_of_key) and not torch.equal(a.value_of_key, c.value_of_key)
    pairs = set()
    for split in (a.train_set, a.val_set, a.test_set):
        x, y = split.tensors
        pairs |= set(zip(x[:, 0::2].flatten().tolist(), y[:, 1::2].flatten().tolist()))
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)) == 31  # one value per key, every key drawn
    assert all(a.value_of_key[k] == v for k, v in pairs)
    assert a.test_set.tensors[0].shape == (64, 24)
    assert not torch.equal(a.train_set.tensors[0], a.val_set.tensors[0])


@pytest.mark.parametrize("seq_len", [12, 13, 2])
def test_compression_reads_the_tokens_back_after_the_compression_token(seq_len):
    vocab = 6
    x, y = compression_examples(300, seq_len, vocab, gen())
    assert x.shape == y.shape == (300, seq_len)
    n_tokens = seq_len // 2
    for xs, ys in zip(x.tolist(), y.tolist()):
        assert all(0 <= tok < vocab - 1 for tok in xs[:n_tokens])
        assert xs[n_tokens:] == [vocab - 1] * (seq_len - n_tokens)
        assert ys == [I] * n_tokens + xs[:n_tokens] + [I] * (seq_len % 2)
    assert set(x[:, 0].tolist()) == set(range(vocab - 1))


def test_memory_errors():
    with pytest.raises(ValueError, match="task mad_memorization: vocab_size=2 must be at least 3"):
        memorization_map(2, 0)
    with pytest.raises(ValueError, match="task mad_memorization: seq_len=1 must be at least 2"):
        memorization_examples(1, 1, 16, memorization_map(16, 0), gen())
    with pytest.raises(ValueError, match="task mad_compression: seq_len=1 must be at least 2"):
        compression_examples(1, 1, 16, gen())
    with pytest.raises(ValueError, match="task mad_compression: vocab_size=1 must be at least 2"):
        compression_examples(1, 8, 1, gen())


# ---------------------------------------------------------------- data modules


def recall_dm(**kw):
    args = dict(name="mad_recall", seq_len=24, vocab_size=16, n_classes=16, target="token", causal=True,
                n_train=40, n_val=20, n_test=20, seed=3)
    args.update(kw)
    return MADRecallDataModule(**args)


def fuzzy_dm(**kw):
    args = dict(name="mad_fuzzy_recall", seq_len=24, vocab_size=16, n_classes=16, target="token", causal=True,
                n_train=40, n_val=20, n_test=20, seed=3)
    args.update(kw)
    return MADFuzzyRecallDataModule(**args)


def memorization_dm(**kw):
    args = dict(name="mad_memorization", seq_len=24, vocab_size=32, n_classes=32, target="token", n_train=40,
                n_val=20, n_test=20, seed=3)
    args.update(kw)
    return MADMemorizationDataModule(**args)


def compression_dm(**kw):
    args = dict(name="mad_compression", seq_len=24, vocab_size=16, n_classes=16, target="token", n_train=40,
                n_val=20, n_test=20, seed=3)
    args.update(kw)
    return MADCompressionDataModule(**args)


@pytest.mark.parametrize("make", [recall_dm, fuzzy_dm, memorization_dm, compression_dm],
                         ids=["recall", "fuzzy", "memorization", "compression"])
def test_data_modules_are_seeded_and_test_longer(make):
    a, b, c, longer = make(), make(), make(seed=4), make(test_seq_len=40)
    for dm in (a, b, c, longer):
        dm.setup()
    assert torch.equal(a.train_set.tensors[0], b.train_set.tensors[0])
    assert torch.equal(a.test_set.tensors[1], b.test_set.tensors[1])
    assert not torch.equal(a.train_set.tensors[0][:20], a.val_set.tensors[0])
    assert not torch.equal(a.train_set.tensors[0], c.train_set.tensors[0])
    assert torch.equal(longer.train_set.tensors[0], a.train_set.tensors[0])
    x, y = longer.test_set.tensors
    assert x.shape == y.shape == (20, 40) and (y != I).any()
    with pytest.raises(ValueError, match="n_classes must equal vocab_size"):
        make(n_classes=8)


def test_recall_modules_train_on_next_tokens_and_score_the_recalls():
    for make in (recall_dm, fuzzy_dm):
        dm = make()
        dm.setup()
        x, y = dm.train_set.tensors
        assert torch.equal(y[:, :-1][y[:, :-1] != I], x[:, 1:][y[:, :-1] != I])
        assert (y != I).float().mean() > 0.8  # (fuzzy: the front padding is unlabelled)
        for split in (dm.val_set, dm.test_set):
            assert 0 < (split.tensors[1] != I).float().mean() < 0.5
        only_scored = make(train_next_token=False)
        only_scored.setup()
        assert (only_scored.train_set.tensors[1] != I).float().mean() < 0.5


def test_noisy_recall_module_draws_noise():
    dm = recall_dm(name="mad_noisy_recall", vocab_size=32, n_classes=32, noise_vocab_size=16, frac_noise=0.5)
    dm.setup()
    assert (dm.train_set.tensors[0] >= 16).any() and dm.train_set.tensors[0].max() < 32
    with pytest.raises(ValueError, match="frac_noise=0.5 needs noise tokens"):
        recall_dm(frac_noise=0.5).setup()


MAD_TASKS = {  # task: (vocab_size, causal, seq_len)
    "mad_recall": (16, True, 128), "mad_noisy_recall": (32, True, 128), "mad_fuzzy_recall": (16, True, 128),
    "mad_selective_copy": (16, False, 256), "mad_compression": (16, False, 62), "mad_memorization": (256, False, 32),
}


@pytest.mark.parametrize("task", list(MAD_TASKS))
def test_task_configs(task):
    vocab, causal, seq_len = MAD_TASKS[task]
    with composed(f"task={task}", "task.n_train=8", "task.n_val=4", "task.n_test=4",
                  f"task.test_seq_len={seq_len + 6}") as cfg:
        dm = instantiate(cfg.task)
        dm.setup()
    assert dm.name == task and dm.target == "token" and dm.causal is causal
    assert dm.vocab_size == dm.n_classes == vocab and dm.seq_len == seq_len
    x, y = dm.train_set.tensors
    assert x.shape == y.shape == (8, seq_len)
    assert x.min() >= 0 and x.max() < vocab and (y != I).any()
    assert dm.test_set.tensors[0].shape == (4, seq_len + 6)


def test_mad_selective_copy_config_has_mads_layout():
    with composed("task=mad_selective_copy", "task.n_train=50", "task.n_val=4", "task.n_test=4") as cfg:
        dm = instantiate(cfg.task)
        dm.setup()
    x, y = dm.train_set.tensors
    # MAD: 14 symbols, blank, copy token; 16 symbols copied; the copy token at 256 - 16 - 1.
    assert (x[:, 239] == 15).all() and (x[:, 240:] == 0).all()
    assert ((x[:, :239] > 0) & (x[:, :239] < 15)).sum(dim=1).eq(16).all()
    assert torch.equal(y[:, 240:], x[:, :239][x[:, :239] > 0].view(50, 16))
    assert (y[:, :240] == I).all()


@pytest.mark.slow
def test_train_on_mad_recall_learns(tmp_path, monkeypatch):
    """A 2-layer DeltaNet (d_model 32) trained 3 epochs on in-context recall with MAD's next-token targets
    scores about 0.9 on the recall positions (0.93, 0.85, 0.91 for seeds 1, 2, 3; chance is 1/8); about 17 s.

    One intra-op thread, as in tests/test_deltanet.py::test_train_on_copy_learns."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    results = train(tmp_path / "run", "model=deltanet", "task=mad_recall", "model.d_model=32", "model.n_layers=2",
                    "task.seq_len=32", "task.n_train=2048", "task.n_val=256", "task.n_test=256",
                    "task.batch_size=32", "trainer.max_epochs=3", "optimizer.lr=1e-2", "print_config=false",
                    "seed=1")
    assert results["status"] == "completed"
    assert results["metrics"]["test/acc"] > 0.6
