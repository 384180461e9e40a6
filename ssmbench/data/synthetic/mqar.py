"""Multi-query associative recall, MQAR (Arora et al. 2023, "Zoology: Measuring and Improving Recall in
Efficient Language Models"), generated as in the Zoology benchmark.

Vocabulary V = vocab_size: keys are drawn from 1 .. V//2 - 1, values from V//2 .. V - 1. One example of
length L with K = num_kv_pairs:

    x = k_1 v_1 k_2 v_2 .. k_K v_K | query region of L - 2K positions
    y = ignore ....................| v_i at the position of the query k_i, ignore elsewhere

The K keys of an example are distinct and so are its K values (both drawn without replacement). Every key
is queried exactly once: query i sits at position 2K + 2 g_i of the query region's even slots, where the
gaps g_1..g_K are drawn without replacement from 0 .. S - 1 (S = (L - 2K) // 2) with probability
proportional to (g + 1)^(alpha - 1), a power law (alpha -> 0 favours queries close to the key-value
pairs; alpha = 1 is uniform; Zoology's default alpha is 0.01). The label at a query's position is its
value, so a model predicts the value from the query key (the next-token convention of Zoology); the value
itself never appears after its query. With `noise` every position of the query region that holds no
query holds a uniform random token of 0 .. V - 1 (Zoology's `random_non_queries`), otherwise 0.

Chance accuracy: 2 / V guessing a value token uniformly, 1 / K guessing among the K values of the
example. Train, validation and test sets are drawn one after another from one generator seeded by `seed`.
"""

from __future__ import annotations

import torch

from ssmbench.data.base import IGNORE_INDEX
from ssmbench.data.synthetic import SyntheticTask


# Rows are drawn in chunks of at most this many random numbers, so memory stays bounded at Zoology's scale
# (100k examples over 4095 keys).
_CHUNK_ELEMENTS = 1 << 22


def _row_chunks(n: int, width: int):
    step = max(1, _CHUNK_ELEMENTS // max(width, 1))
    return ((i, min(i + step, n)) for i in range(0, n, step))


def _distinct(n: int, k: int, low: int, high: int, generator: torch.Generator) -> torch.Tensor:
    """(n, k) int64: in each row k distinct integers drawn uniformly without replacement from [low, high)."""
    return torch.cat([
        torch.rand(b - a, high - low, generator=generator).topk(k, dim=1).indices + low
        for a, b in _row_chunks(n, high - low)
    ])


def power_law_gaps(n: int, k: int, space: int, alpha: float, generator: torch.Generator) -> torch.Tensor:
    """(n, k) int64: in each row k distinct gaps from 0 .. space - 1, drawn one after another without
    replacement with P(g) proportional to (g + 1)^(alpha - 1) (Gumbel top-k, which samples exactly that)."""
    log_p = (alpha - 1.0) * torch.log(torch.arange(1, space + 1, dtype=torch.float64))
    chunks = []
    for a, b in _row_chunks(n, space):
        u = torch.rand(b - a, space, generator=generator, dtype=torch.float64).clamp_(1e-300, 1.0)
        chunks.append((log_p - torch.log(-torch.log(u))).topk(k, dim=1).indices)
    return torch.cat(chunks)


def mqar_examples(
    n: int, seq_len: int, vocab_size: int, num_kv_pairs: int, alpha: float, noise: bool,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """n examples: x (n, seq_len) int64 tokens and y (n, seq_len) int64 labels (see the module docstring)."""
    k = num_kv_pairs
    if k < 1:
        raise ValueError(f"task mqar: num_kv_pairs={k} must be at least 1")
    if seq_len < 4 * k:
        raise ValueError(f"task mqar: seq_len={seq_len} must be at least 4 * num_kv_pairs = {4 * k}")
    if vocab_size // 2 - 1 < k:
        raise ValueError(
            f"task mqar: vocab_size={vocab_size} leaves {vocab_size // 2 - 1} keys for {k} key-value pairs; "
            f"use vocab_size >= {2 * k + 2}"
        )
    if alpha <= 0:
        raise ValueError(f"task mqar: alpha={alpha} must be positive (the power law is (g + 1)^(alpha - 1))")
    half = vocab_size // 2
    keys = _distinct(n, k, 1, half, generator)
    values = _distinct(n, k, half, vocab_size, generator)
    gaps = power_law_gaps(n, k, (seq_len - 2 * k) // 2, alpha, generator)
    query_pos = 2 * k + 2 * gaps

    x = torch.zeros(n, seq_len, dtype=torch.long)
    if noise:
        x[:, 2 * k :] = torch.randint(0, vocab_size, (n, seq_len - 2 * k), generator=generator)
    x[:, 0 : 2 * k : 2] = keys
    x[:, 1 : 2 * k : 2] = values
    x.scatter_(1, query_pos, keys)
    y = torch.full((n, seq_len), IGNORE_INDEX, dtype=torch.long)
    y.scatter_(1, query_pos, values)
    return x, y


class MQARDataModule(SyntheticTask):
    def __init__(self, *, num_kv_pairs: int = 8, alpha: float = 0.01, noise: bool = True, **metadata):
        super().__init__(**metadata)
        if self.n_classes != self.vocab_size:
            raise ValueError(
                f"task mqar: n_classes must equal vocab_size = {self.vocab_size} (labels are value tokens), "
                f"got {self.n_classes}"
            )
        self.num_kv_pairs, self.alpha, self.noise = num_kv_pairs, float(alpha), bool(noise)

    def examples(self, n: int, seq_len: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return mqar_examples(n, seq_len, self.vocab_size, self.num_kv_pairs, self.alpha, self.noise, generator)
