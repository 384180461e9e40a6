"""The memory tasks of MAD (Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid Architectures",
ICML 2024; task definitions in athms/mad-lab@mad/data/instances.py): memorization (facts stored
in the weights across training) and compression (a sequence squeezed into a model's state and read back).

Memorization (`memorization_examples`). Vocabulary V: insert token V - 1, keys 0 .. K - 1 and values
K .. V - 2 with K = (V - 1) // 2. One key -> value map, a random injection of the K keys into the values,
is fixed by `seed` and shared by every example of every split (MAD draws it once from the run's seed,
athms/mad-lab@mad/configs.py); the point is to memorize it across training, not to read it from the
context. One example of length L:

    x = k_1  I    k_2  I    ..  k_P  I            (P = (L + 1) // 2 keys, uniform with repeats)
    y = .    v_1  .    v_2  ..  .    v_P          (v_i = map(k_i), at the insert token after k_i)

For odd L the last key has no insert token and no label. Chance accuracy: 1 / (V - 1 - K) guessing a value
(1/128 at MAD's V = 256); a model that has memorized the map scores 1.

Compression (`compression_examples`). Vocabulary V: compression token c = V - 1, content 0 .. V - 2. MAD's
instance is N uniform content tokens then c, reconstructed in full by an autoencoder: its encoder reads the
sequence, the vector at c (one d_model vector) is the whole code, and a position-wise MLP decoder given that
code plus a sinusoidal position embedding predicts every input token (athms/mad-lab@mad/model/auto_encoder.py,
selected for this task by athms/mad-lab@train.py). ssmbench's models end in a per-token linear decoder and
have no second network, so here the read-back happens in the sequence itself, after the compression token:

    x = t_1 .. t_N  c    c   ..  c                (N = L // 2 content tokens, uniform)
    y = .   ..  .   t_1  t_2 ..  t_N              (t_i at position N + i - 1; odd L: the last c unlabelled)

The output at the compression token starts the reconstruction, in order, one token per position. For a
recurrent model everything it reconstructs must pass through its state at c, as everything in MAD passes
through the code at c; attention can look back at the tokens instead, so for attention this variant is
easier than MAD's (it is copying). MAD also scores the reconstruction of c itself, a free target; here it is
not scored.
Chance accuracy: 1 / (V - 1) (1/15 at MAD's V = 16).

Train, validation and test sets are drawn one after another from one generator seeded by `seed`.
"""

from __future__ import annotations

import numpy as np
import torch

from ssmbench.data.base import IGNORE_INDEX
from ssmbench.data.synthetic import SyntheticTask

# Tags the map's random stream apart from the examples' (both derive from `seed`; see memorization_map).
_MAP_STREAM = 0x4D4150


def memorization_map(vocab_size: int, seed: int) -> torch.Tensor:
    """(K,) int64 with K = (vocab_size - 1) // 2: the value of each key, distinct values drawn uniformly from
    K .. vocab_size - 2. Drawn by numpy's PCG64 from the seed sequence (seed, _MAP_STREAM), a stream
    independent of the torch generator the examples are drawn from, so the map and the keys of an example are
    unrelated however both derive from `seed`."""
    n_keys = (vocab_size - 1) // 2
    if n_keys < 1:
        raise ValueError(f"task mad_memorization: vocab_size={vocab_size} must be at least 3 (a key, a value and "
                         f"the insert token)")
    rng = np.random.default_rng([seed, _MAP_STREAM])
    return torch.from_numpy(rng.permutation(vocab_size - 1 - n_keys)[:n_keys] + n_keys).long()


def memorization_examples(n: int, seq_len: int, vocab_size: int, value_of_key: torch.Tensor,
                          generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n examples: x (n, seq_len) int64 tokens and y (n, seq_len) int64 labels, the keys mapped by
    value_of_key: (K,) (see the module docstring)."""
    if seq_len < 2:
        raise ValueError(f"task mad_memorization: seq_len={seq_len} must be at least 2 (a key and its insert token)")
    pairs = (seq_len + 1) // 2
    keys = torch.randint(0, len(value_of_key), (n, pairs), generator=generator)
    x = torch.full((n, 2 * pairs), vocab_size - 1, dtype=torch.long)
    x[:, 0::2] = keys
    y = torch.full((n, 2 * pairs), IGNORE_INDEX, dtype=torch.long)
    y[:, 1::2] = value_of_key[keys]
    return x[:, :seq_len].contiguous(), y[:, :seq_len].contiguous()


def compression_examples(n: int, seq_len: int, vocab_size: int,
                         generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n examples: x (n, seq_len) int64 tokens and y (n, seq_len) int64 labels (see the module docstring)."""
    if vocab_size < 2:
        raise ValueError(f"task mad_compression: vocab_size={vocab_size} must be at least 2 (a content token and "
                         f"the compression token)")
    if seq_len < 2:
        raise ValueError(f"task mad_compression: seq_len={seq_len} must be at least 2 (a token and its read-back)")
    n_tokens = seq_len // 2
    tokens = torch.randint(0, vocab_size - 1, (n, n_tokens), generator=generator)
    x = torch.full((n, seq_len), vocab_size - 1, dtype=torch.long)
    x[:, :n_tokens] = tokens
    y = torch.full((n, seq_len), IGNORE_INDEX, dtype=torch.long)
    y[:, n_tokens : 2 * n_tokens] = tokens
    return x, y


class MADMemorizationDataModule(SyntheticTask):
    """Memorization: one key -> value map, fixed by `seed`, behind every example of every split."""

    def __init__(self, **metadata):
        super().__init__(**metadata)
        if self.n_classes != self.vocab_size:
            raise ValueError(f"task {self.name}: n_classes must equal vocab_size = {self.vocab_size} (labels are "
                             f"tokens), got {self.n_classes}")
        self.value_of_key = memorization_map(self.vocab_size, self.seed)

    def examples(self, n: int, seq_len: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return memorization_examples(n, seq_len, self.vocab_size, self.value_of_key, generator)


class MADCompressionDataModule(SyntheticTask):
    """Compression: read a sequence back, in order, after a compression token."""

    def __init__(self, **metadata):
        super().__init__(**metadata)
        if self.n_classes != self.vocab_size:
            raise ValueError(f"task {self.name}: n_classes must equal vocab_size = {self.vocab_size} (labels are "
                             f"tokens), got {self.n_classes}")

    def examples(self, n: int, seq_len: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return compression_examples(n, seq_len, self.vocab_size, generator)
