"""The recall tasks of MAD (Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid Architectures",
ICML 2024; task definitions in athms/mad-lab@mad/data/instances.py): in-context recall, noisy
in-context recall and fuzzy in-context recall, in the multi-query form the MAD benchmark uses
(athms/mad-lab@configs/tasks/*.yml: multi_query: True). An example is a stream of key-value pairs; keys
repeat within the example and a repeated key always carries the value it had the first time, so each repeat
asks the model to recall that value from its context. The last pair is the probe: a key seen before.

In-context recall (`in_context_recall_examples`). Vocabulary V with a noise vocabulary of V_n tokens:
M = V - V_n content tokens, keys 0 .. M//2 - 1, values M//2 .. M - 1, noise tokens M .. V - 1. With
P = (L + 1) // 2 pairs, the stream s of 2P tokens and an example of length L are

    s       =  k_1  v_1  k_2  v_2  n  n  k_4  v_4 ..  k_q  v_q      (k_q: a key of the stream before it)
    x       =  s_0 .. s_{L-1}
    y_test  =  .    .    v_2* .    .  .  v_4* .   ..  v_q  .        (evaluation: scored positions only)
    y_train =  s_1 .. s_L                                           (training: every next token)

where v_j* is v_j if k_j occurred earlier in the example, else IGNORE_INDEX, and n n is a noise pair.

Keys are uniform over the M//2 keys (repeats are the point), and each key's value in an example is uniform
over the values, drawn once. Each pair before the probe is, with probability frac_noise, two uniform noise
tokens instead (one random pair before the probe is always a key-value pair); the probe's key is uniform
over the distinct keys of the stream's earlier pairs. The scored positions are those of keys seen earlier in
the example, labelled with the value that follows them (MAD's test targets shifted by one, so the model
predicts the value while reading its key; a value never labels its own position). As in MAD, training
uses the next-token targets everywhere (athms/mad-lab@mad/data/dataset.py trains on `is_training=True`
instances, which return the shifted inputs as targets) and validation and test score only the recall
positions (`train_next_token=false`, for fuzzy recall too, trains on the scored positions only). For even L
the last position has no next token and no label. Noisy in-context recall is this task with V_n > 0 and
frac_noise > 0. MAD's single-query variant (multi_query=False: only the probe scored, after a copy-prefix
token) is not offered; the MAD benchmark does not use it.

Fuzzy in-context recall (`fuzzy_recall_examples`): keys and values are motifs, runs of 1 .. k_motif_size
(keys) and 1 .. v_motif_size (values) distinct tokens, so the model cannot tell where a key starts and ends
from a single token. Vocabulary V: pad token V - 1, keys 0 .. (V-1)//2 - 1, values (V-1)//2 .. V - 2. Each
pair draws its key's size uniformly, then the key uniformly among the ordered motifs of that size, and, for
a key new to the example, its value's size and its value likewise; a repeated key carries its first value.
Training examples draw key sizes from 1 .. k_motif_size; evaluation examples use keys of exactly
k_motif_size tokens (as MAD's test instances do), values of every size in both. The probe pair is placed at
a uniformly random pair boundary of the context (unless its key already occurs there) and repeated at the
end; pairs are added while one more pair of the largest size still fits, and the stream is left-padded with
the pad token to L + 1 tokens:

    s       =  pad .. pad  k_1 k_1' v_1  k_p k_p' k_p'' v_p v_p' .. k_p k_p' k_p'' v_p v_p'
    x       =  s_0 .. s_{L-1}
    y_test  =  every value token of a key seen before, at the position before it (so the last token of the
               key predicts the first value token, and so on); IGNORE_INDEX elsewhere
    y_train =  s_1 .. s_L, IGNORE_INDEX where the next token is a pad

MAD also trains on the pad tokens (predicting pad after pad); they carry nothing to learn, so this task leaves
them unlabelled. MAD appends a probe pair even when the context happens to lack it; here the probe's key is
always in the context.

Chance accuracy on the scored positions: 1 / (number of value tokens), guessing a value token uniformly:
1/8 for in-context recall (V = 16), noisy recall (V = 32, V_n = 16) and fuzzy recall (V = 16).
Train, validation and test sets are drawn one after another from one generator seeded by `seed`; the
training split uses the training targets (and, for fuzzy recall, the training key sizes), validation and
test the evaluation ones.
"""

from __future__ import annotations

import torch

from ssmbench.data.base import IGNORE_INDEX
from ssmbench.data.synthetic import SyntheticTask

# Rows of fuzzy-recall motifs are drawn in chunks of at most this many random numbers (bounded memory).
_CHUNK_ELEMENTS = 1 << 22


def next_token_labels(stream: torch.Tensor, seq_len: int) -> torch.Tensor:
    """(n, S) token stream -> (n, seq_len) labels y[t] = stream[t + 1], IGNORE_INDEX past the stream's end."""
    y = torch.full((stream.shape[0], seq_len), IGNORE_INDEX, dtype=torch.long)
    width = min(seq_len, stream.shape[1] - 1)
    y[:, :width] = stream[:, 1 : width + 1]
    return y


def in_context_recall_examples(
    n: int, seq_len: int, vocab_size: int, noise_vocab_size: int, frac_noise: float, train: bool,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """n examples: x (n, seq_len) int64 tokens and y (n, seq_len) int64 labels, the training targets when
    `train` else the scored recall positions (see the module docstring)."""
    content = vocab_size - noise_vocab_size
    if noise_vocab_size < 0 or content < 2:
        raise ValueError(f"task mad_recall: vocab_size={vocab_size} minus noise_vocab_size={noise_vocab_size} "
                         f"must leave at least 2 tokens (a key and a value)")
    if not 0 <= frac_noise < 1:
        raise ValueError(f"task mad_recall: frac_noise={frac_noise} must be in [0, 1)")
    if frac_noise > 0 and noise_vocab_size == 0:
        raise ValueError(f"task mad_recall: frac_noise={frac_noise} needs noise tokens; set noise_vocab_size > 0")
    if seq_len < 3:
        raise ValueError(f"task mad_recall: seq_len={seq_len} must be at least 3 (a pair, then the probe key)")
    n_keys, pairs = content // 2, (seq_len + 1) // 2
    rows = torch.arange(n)
    keys = torch.randint(0, n_keys, (n, pairs), generator=generator)
    value_of_key = torch.randint(n_keys, content, (n, n_keys), generator=generator)
    noise = torch.rand(n, pairs, generator=generator) < frac_noise
    noise[rows, torch.randint(0, pairs - 1, (n,), generator=generator)] = False
    noise[:, -1] = False
    # Noise pairs point at a dummy key column n_keys, so they neither present a key nor count as one.
    key_slot = keys.masked_fill(noise, n_keys)
    present = torch.zeros(n, n_keys + 1, dtype=torch.bool).scatter_(1, key_slot[:, :-1], True)[:, :n_keys]
    probe = torch.rand(n, n_keys, generator=generator).masked_fill(~present, -1.0).argmax(dim=1)
    keys[:, -1] = probe
    key_slot[:, -1] = probe
    first = torch.full((n, n_keys + 1), pairs).scatter_reduce(1, key_slot, torch.arange(pairs).expand(n, -1),
                                                              "amin")
    repeated = (first.gather(1, key_slot) < torch.arange(pairs)) & ~noise
    values = value_of_key.gather(1, keys)

    stream = torch.empty(n, 2 * pairs, dtype=torch.long)
    stream[:, 0::2], stream[:, 1::2] = keys, values
    if frac_noise > 0:
        noise_tokens = torch.randint(content, vocab_size, (n, pairs, 2), generator=generator)
        stream.view(n, pairs, 2)[noise] = noise_tokens[noise]
    x = stream[:, :seq_len].clone()
    if train:
        return x, next_token_labels(stream, seq_len)
    y = torch.full((n, seq_len), IGNORE_INDEX, dtype=torch.long)
    y[:, 0::2] = values.masked_fill(~repeated, IGNORE_INDEX)
    return x, y


def _motifs(n: int, pairs: int, size: int, low: int, high: int, generator: torch.Generator) -> torch.Tensor:
    """(n, pairs, size) int64: ordered runs of `size` distinct tokens from [low, high), uniform (the indices of
    the largest `size` of high - low uniforms, in order of size, are a uniform ordered draw without
    replacement)."""
    step = max(1, _CHUNK_ELEMENTS // (pairs * (high - low)))
    chunks = [torch.rand(min(step, n - a), pairs, high - low, generator=generator).topk(size, dim=-1).indices + low
              for a in range(0, n, step)]
    return torch.cat(chunks) if chunks else torch.empty(0, pairs, size, dtype=torch.long)


def fuzzy_recall_examples(
    n: int, seq_len: int, vocab_size: int, k_motif_size: int, v_motif_size: int, train: bool, next_token: bool,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """n examples: x (n, seq_len) int64 tokens and y (n, seq_len) int64 labels. Keys of 1 .. k_motif_size
    tokens when `train` (training examples), else of k_motif_size; labels the next-token targets when
    `next_token`, else the scored recall positions (see the module docstring)."""
    if k_motif_size < 1 or v_motif_size < 1:
        raise ValueError(f"task mad_fuzzy_recall: k_motif_size={k_motif_size} and v_motif_size={v_motif_size} "
                         f"must be at least 1")
    pad, n_keys = vocab_size - 1, (vocab_size - 1) // 2
    if n_keys < k_motif_size or pad - n_keys < v_motif_size:
        raise ValueError(f"task mad_fuzzy_recall: vocab_size={vocab_size} leaves {n_keys} key and {pad - n_keys} "
                         f"value tokens, too few for motifs of {k_motif_size} and {v_motif_size} distinct tokens; "
                         f"use vocab_size >= {2 * max(k_motif_size, v_motif_size) + 1}")
    largest = k_motif_size + v_motif_size
    if seq_len + 1 < 2 * largest:
        raise ValueError(f"task mad_fuzzy_recall: seq_len={seq_len} must be at least 2 * (k_motif_size + "
                         f"v_motif_size) - 1 = {2 * largest - 1} (the probe pair twice)")
    # Column 0 is the probe pair; pairs of at least 2 tokens fill at most (seq_len + 1) // 2 further columns.
    pairs = (seq_len + 1) // 2 + 1
    low_key_size = 1 if train else k_motif_size
    key_sizes = torch.randint(low_key_size, k_motif_size + 1, (n, pairs), generator=generator).view(-1).tolist()
    value_sizes = torch.randint(1, v_motif_size + 1, (n, pairs), generator=generator).view(-1).tolist()
    keys = _motifs(n, pairs, k_motif_size, 0, n_keys, generator).view(-1).tolist()
    values = _motifs(n, pairs, v_motif_size, n_keys, pad, generator).view(-1).tolist()
    slots = torch.rand(n, generator=generator).tolist()

    def motif(tokens: list, sizes: list, i: int, j: int, width: int) -> tuple:
        start = (i * pairs + j) * width
        return tuple(tokens[start : start + sizes[i * pairs + j]])

    rows_x, rows_y = [], []
    for i in range(n):
        probe = (motif(keys, key_sizes, i, 0, k_motif_size), motif(values, value_sizes, i, 0, v_motif_size))
        value_of = dict([probe])
        room = seq_len + 1 - 2 * (len(probe[0]) + len(probe[1]))
        context, used = [], 0
        for j in range(1, pairs):
            if used + largest > room:
                break
            key = motif(keys, key_sizes, i, j, k_motif_size)
            value = value_of.setdefault(key, motif(values, value_sizes, i, j, v_motif_size))
            context.append((key, value))
            used += len(key) + len(value)
        if all(key != probe[0] for key, _ in context):
            context.insert(int(slots[i] * (len(context) + 1)), probe)
        stream, scored, seen = [], [], set()
        for key, value in context + [probe]:
            stream += key + value
            scored += [IGNORE_INDEX] * len(key) + (list(value) if key in seen else [IGNORE_INDEX] * len(value))
            seen.add(key)
        padding = seq_len + 1 - len(stream)
        rows_x.append([pad] * padding + stream[:-1])
        rows_y.append(([IGNORE_INDEX] * padding + (stream if next_token else scored))[1:])
    return (torch.tensor(rows_x, dtype=torch.long).view(n, seq_len),
            torch.tensor(rows_y, dtype=torch.long).view(n, seq_len))


class MADRecallDataModule(SyntheticTask):
    """In-context recall, or noisy in-context recall with noise_vocab_size > 0 and frac_noise > 0
    (noise_vocab_size None: no noise tokens)."""

    def __init__(self, *, noise_vocab_size: int | None = None, frac_noise: float = 0.0,
                 train_next_token: bool = True, **metadata):
        super().__init__(**metadata)
        if self.n_classes != self.vocab_size:
            raise ValueError(f"task {self.name}: n_classes must equal vocab_size = {self.vocab_size} (labels are "
                             f"tokens), got {self.n_classes}")
        self.noise_vocab_size, self.frac_noise = int(noise_vocab_size or 0), float(frac_noise)
        self.train_next_token = bool(train_next_token)

    def split_examples(self, split: str, n: int, seq_len: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        return in_context_recall_examples(n, seq_len, self.vocab_size, self.noise_vocab_size, self.frac_noise,
                                          split == "train" and self.train_next_token, generator)


class MADFuzzyRecallDataModule(SyntheticTask):
    """Fuzzy in-context recall: keys and values are motifs of several tokens."""

    def __init__(self, *, k_motif_size: int = 3, v_motif_size: int = 3, train_next_token: bool = True,
                 **metadata):
        super().__init__(**metadata)
        if self.n_classes != self.vocab_size:
            raise ValueError(f"task {self.name}: n_classes must equal vocab_size = {self.vocab_size} (labels are "
                             f"tokens), got {self.n_classes}")
        self.k_motif_size, self.v_motif_size = int(k_motif_size), int(v_motif_size)
        self.train_next_token = bool(train_next_token)

    def split_examples(self, split: str, n: int, seq_len: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        train = split == "train"
        return fuzzy_recall_examples(n, seq_len, self.vocab_size, self.k_motif_size, self.v_motif_size, train,
                                     train and self.train_next_token, generator)
