"""The word problem of the symmetric group S_n (Merrill, Petty, Sabharwal 2024, "The Illusion of State in
State-Space Models"; S_5 for n = 5): track the composition of a stream of permutations
(ssmbench/data/synthetic/state_tracking.py has the example layout, the lengths and the splits).

Enumeration: token k is the k-th permutation of (0, .., n-1) in lexicographic order, the order of
itertools.permutations(range(n)); a permutation p is the map i -> p[i], and token 0 is the identity.
There are n! tokens and n! classes (vocab_size = n_classes = n!, 120 for S_5).

Composition order: (p o q)(i) = p(q(i)), and the label at position t is the index of

    s_t = x_1 o x_2 o ... o x_t,   i.e.  s_1 = x_1,  s_t = s_{t-1} o x_t,  s_t(i) = s_{t-1}(x_t(i))

(x_t acts first on the right). S_n is not commutative for n >= 3, so the order matters.
"""

from __future__ import annotations

import itertools
import math

import torch

from ssmbench.data.synthetic.state_tracking import StateTrackingDataModule

MAX_ELEMENTS = 8  # 8! = 40320 tokens and classes: already a large embedding and output layer


def permutations(n_elements: int) -> torch.Tensor:
    """(n!, n) int64: row k is the k-th permutation of 0 .. n-1 in lexicographic order."""
    return torch.tensor(list(itertools.permutations(range(n_elements))), dtype=torch.long).reshape(-1, n_elements)


def permutation_index(p: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
    """p: (..., n) permutations, perms: (n!, n) from `permutations(n)` -> (...) int64, the row of perms equal to
    each p. Read as base-n numbers the rows increase (lexicographic order), so a binary search finds them."""
    n = perms.shape[1]
    place = n ** torch.arange(n - 1, -1, -1)
    return torch.searchsorted(perms @ place, p @ place)


def permutation_states(x: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
    """x: (N, L) int64 token indices into perms (n!, n) -> (N, L) int64, the index of s_t = x_1 o ... o x_t."""
    states = torch.empty_like(x)
    s = perms[x[:, 0]]                      # (N, n): s_1 = x_1
    states[:, 0] = x[:, 0]
    for t in range(1, x.shape[1]):
        s = s.gather(1, perms[x[:, t]])     # s_t(i) = s_{t-1}(x_t(i))
        states[:, t] = permutation_index(s, perms)
    return states


class PermutationDataModule(StateTrackingDataModule):
    def __init__(self, *, n_elements: int = 5, **options):
        super().__init__(**options)
        if n_elements < 2:
            raise ValueError(f"task {self.name}: n_elements={n_elements} must be at least 2")
        if n_elements > MAX_ELEMENTS:
            raise ValueError(f"task {self.name}: n_elements={n_elements} must be at most {MAX_ELEMENTS}: the task has "
                             f"n_elements! tokens and classes, {math.factorial(n_elements)} for {n_elements}")
        order = math.factorial(n_elements)
        if self.vocab_size != order or self.n_classes != order:
            raise ValueError(f"task {self.name}: vocab_size and n_classes must be n_elements! = {order} (one token and "
                             f"one class per permutation), got {self.vocab_size} and {self.n_classes}; "
                             f"set task.vocab_size={order}")
        self.n_elements = n_elements
        self.perms = permutations(n_elements)

    def running_state(self, x: torch.Tensor) -> torch.Tensor:
        return permutation_states(x, self.perms)
