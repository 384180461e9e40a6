"""Running sum modulo m, and parity (m = 2): the state-tracking task of the cyclic group Z_m
(ssmbench/data/synthetic/state_tracking.py has the example layout, the lengths and the splits).

Tokens x_t are residues 0 .. m - 1 (vocab_size = n_classes = m = modulus); the label at position t is

    y_t = (x_1 + x_2 + ... + x_t) mod m

With m = 2 this is the running parity x_1 xor ... xor x_t of a bit string, the `parity` task
(`ParityDataModule`, conf/task/parity.yaml).
"""

from __future__ import annotations

import torch

from ssmbench.data.synthetic.state_tracking import StateTrackingDataModule


def modular_sum_states(x: torch.Tensor, modulus: int) -> torch.Tensor:
    """x: (N, L) int64 residues -> (N, L) int64, y_t = (x_1 + ... + x_t) mod modulus."""
    return x.cumsum(dim=1) % modulus


class ModularSumDataModule(StateTrackingDataModule):
    def __init__(self, *, modulus: int = 5, **options):
        super().__init__(**options)
        if modulus < 2:
            raise ValueError(f"task {self.name}: modulus={modulus} must be at least 2")
        if self.vocab_size != modulus or self.n_classes != modulus:
            raise ValueError(f"task {self.name}: vocab_size and n_classes must equal modulus = {modulus} (tokens and "
                             f"labels are residues mod {modulus}), got {self.vocab_size} and {self.n_classes}")
        self.modulus = modulus

    def running_state(self, x: torch.Tensor) -> torch.Tensor:
        return modular_sum_states(x, self.modulus)


class ParityDataModule(ModularSumDataModule):
    """The running sum modulo 2 (running parity); its modulus is not an option."""

    def __init__(self, **options):
        super().__init__(modulus=2, **options)
