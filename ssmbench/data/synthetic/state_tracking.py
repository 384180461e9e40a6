"""State tracking with a label at every position: what the parity, modular_sum and permutation tasks share.

A task is a finite group G whose elements are the tokens 0 .. |G| - 1 (token 0 is the identity). One
example of length l <= L = seq_len:

    x = g_1 g_2 .. g_l  0 .. 0          g_t drawn uniformly from G
    y = s_1 s_2 .. s_l  ignore ..       s_t = g_1 * g_2 * ... * g_t, the state after t tokens

Positions past l hold token 0 (the identity, so even a model that read them would see the state unchanged)
and IGNORE_INDEX labels; `lengths` (N,) records l. Training and validation examples are seq_len long and draw l
uniformly from train_lengths = [shortest, longest] (null: every l = seq_len), test examples are test_seq_len
long (null: seq_len) and draw l from test_lengths (null: every l = test_seq_len), so a run can train on short
sequences and test on long ones, as the papers do, while the best checkpoint is still chosen on the lengths it
was trained on. With score_from = k the test split also puts
IGNORE_INDEX on the labels s_1 .. s_{k-1}, so the test accuracy counts only positions t >= k (k = one past the
longest training length: only the positions no training example reached). Chance accuracy is 1 / |G| per
position. Train, validation and test sets are drawn one after another from one generator seeded by `seed`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from ssmbench.data.base import IGNORE_INDEX
from ssmbench.data.synthetic import SyntheticTask


def length_range(lengths: Sequence[int] | None, seq_len: int, where: str, bound: str = "seq_len") -> tuple[int, int]:
    """(shortest, longest) from a [shortest, longest] pair, or (seq_len, seq_len) for None; `where` names the
    option and `bound` the key of seq_len in the error."""
    if lengths is None:
        return seq_len, seq_len
    pair = tuple(int(v) for v in lengths)
    if len(pair) != 2 or not 1 <= pair[0] <= pair[1] <= seq_len:
        raise ValueError(f"{where}={list(lengths)} must be [shortest, longest] with "
                         f"1 <= shortest <= longest <= {bound} = {seq_len}")
    return pair


def state_tracking_examples(
    n: int, seq_len: int, n_tokens: int, lengths: tuple[int, int],
    running_state: Callable[[torch.Tensor], torch.Tensor], generator: torch.Generator, score_from: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n examples (see the module docstring): x (n, seq_len) int64 tokens uniform in [0, n_tokens), y (n, seq_len)
    int64 labels running_state(x) (the state after each token, (n, L) -> (n, L)) and lengths (n,) int64 uniform
    in [lengths[0], lengths[1]]; past its length an example holds token 0 and IGNORE_INDEX labels, and so do the
    labels s_t at positions t < score_from (t = 1 .. L; 1 scores every position). The tokens are drawn before the
    lengths."""
    x = torch.randint(0, n_tokens, (n, seq_len), generator=generator)
    length = torch.randint(lengths[0], lengths[1] + 1, (n,), generator=generator)
    y = running_state(x)
    past_end = torch.arange(seq_len)[None, :] >= length[:, None]
    x[past_end] = 0
    y[past_end] = IGNORE_INDEX
    y[:, : score_from - 1] = IGNORE_INDEX
    return x, y, length


class StateTrackingDataModule(SyntheticTask):
    """A state-tracking task: subclasses define `running_state` (tokens (N, L) -> states (N, L)) and check that
    vocab_size and n_classes match their group. train_lengths (training and validation, within seq_len) and
    test_lengths (within test_seq_len) are [shortest, longest] or None (every example as long as its split);
    score_from (None: every position) is the first position t whose test label is scored."""

    def __init__(self, *, train_lengths: Sequence[int] | None = None, test_lengths: Sequence[int] | None = None,
                 score_from: int | None = None, **options):
        super().__init__(**options)
        if self.seq_len < 1:
            raise ValueError(f"task {self.name}: seq_len={self.seq_len} must be at least 1")
        self.train_lengths = length_range(train_lengths, self.seq_len, f"task {self.name}: train_lengths")
        self.test_lengths = length_range(test_lengths, self.test_seq_len, f"task {self.name}: test_lengths",
                                         "test_seq_len" if self.test_seq_len != self.seq_len else "seq_len")
        longest = self.test_lengths[1]
        if score_from is not None and (isinstance(score_from, bool) or not 1 <= score_from <= longest):
            raise ValueError(f"task {self.name}: score_from={score_from} must be a position in [1, {longest}] (the "
                             f"longest test length) or null to score every position")
        self.score_from = score_from

    def running_state(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L) tokens -> (N, L) int64: the state after each token."""
        raise NotImplementedError(f"{type(self).__name__} must implement running_state()")

    def split_examples(self, split: str, n: int, seq_len: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        lengths, score_from = (self.test_lengths, self.score_from or 1) if split == "test" else (self.train_lengths, 1)
        return state_tracking_examples(n, seq_len, self.vocab_size, lengths, self.running_state, generator,
                                       score_from)
