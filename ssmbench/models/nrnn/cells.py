"""Nonlinear recurrent cells h_t = f(h_{t-1}, x_t) of the nrnn mixer, for the Newton solver (`ssmbench.core.newton`).

Every cell is an input drive followed by a recurrence,

    f(h, x) = recurrence(h, drive(x)),    drive: nn.Linear(d_input, n_gates * d_state),

so that a caller solving for a whole sequence computes u = drive(x) once (it does not depend on
h) and hands `cell.recurrence` to the solver; `cell` itself is a solver cell too (forward(h, x)).
Both follow the cell protocol of `ssmbench.core.newton`: `forward(h_prev, x) -> h` on any leading
dimensions, `d_state`, `num_heads`, `diagonal`, and the analytic `jacobian_diag` (the diagonal of
df/dh_prev) with `value_and_jacobian_diag`, which shares the work of the two.

    elman     h = tanh(W h + U x + b)
    gru       r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)      z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
              n = tanh(W_in x + b_in + r * (W_hn h + b_hn))   h' = (1 - z) * n + z * h
              (the equations and parameter layout of torch.nn.GRUCell)
    diag_gru  the gru equations with diagonal recurrent weights, W_h* h -> a_* * h (ParaGRU,
              Danieli et al. 2025): df/dh is diagonal, so quasi-DEER is exact Newton. Only n keeps
              a recurrent bias (b_hr, b_hz would merely add to the drive's biases).

Heads (elman, gru): the state splits into num_heads independent cells of d_state / num_heads units,
each with its own recurrent weights (W is block-diagonal) and each reading the whole input; the
Jacobian is block-diagonal and the solver handles the blocks separately. diag_gru's units are
independent already, so it has no heads.

Initialization follows torch.nn.RNN / GRU: every weight and bias ~ U(-k, k), k = 1/sqrt(fan-in of
the recurrence), i.e. 1/sqrt(d_state / num_heads) for the dense cells and 1 for diag_gru's
diagonal weights (a one-unit fan-in); the drive uses the same k.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _uniform_(tensor: torch.Tensor, k: float) -> torch.Tensor:
    with torch.no_grad():
        return tensor.uniform_(-k, k)


def _check_heads(d_state: int, num_heads: int) -> int:
    if d_state < 1 or num_heads < 1 or d_state % num_heads:
        raise ValueError(f"d_state={d_state} must be a positive multiple of num_heads={num_heads}")
    return d_state // num_heads


def _block_matvec(W: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Block-diagonal W: (H, K, Dh) with h: (..., H * Dh) -> (..., H, K): one matrix per head."""
    heads, _, head_size = W.shape
    return torch.einsum("...hj,hkj->...hk", h.reshape(*h.shape[:-1], heads, head_size), W)


def _split_gates(u: torch.Tensor, d_state: int) -> tuple[torch.Tensor, ...]:
    """(..., 3D) -> three (..., D) views. By unbind, not indexing: the gradient of three selects would
    be three zero-filled (..., 3, D) tensors summed, that of unbind one stack."""
    return u.reshape(*u.shape[:-1], 3, d_state).unbind(-2)


def _gru_value_and_jacobian_diag(h, r, z, n, g_n, w_r, w_z, w_n) -> tuple[torch.Tensor, torch.Tensor]:
    """The GRU update f = n + z (h - n) and the diagonal of df/dh from its gates, w_* the diagonals of
    the recurrent weights: z + (h - n) z (1 - z) w_z + (1 - z)(1 - n^2)(g_n r (1 - r) w_r + r w_n)."""
    h_minus_n = h - n
    keep = 1 - z
    through_n = torch.addcmul(r * w_n, g_n * w_r, r * (1 - r))
    diag = torch.addcmul(z, h_minus_n * z * keep, w_z)
    diag = torch.addcmul(diag, keep * (1 - n * n), through_n)
    return torch.addcmul(n, z, h_minus_n), diag


class ElmanRecurrence(nn.Module):
    """h = tanh(W h + u), u the drive U x + b; W: (H, Dh, Dh) block-diagonal. (..., D), (..., D) -> (..., D)."""

    diagonal = False

    def __init__(self, d_state: int, num_heads: int = 1):
        super().__init__()
        head_size = _check_heads(d_state, num_heads)
        self.d_state, self.num_heads, self.n_gates = d_state, num_heads, 1
        self.weight = nn.Parameter(_uniform_(torch.empty(num_heads, head_size, head_size), 1 / math.sqrt(head_size)))

    def forward(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return torch.tanh(_block_matvec(self.weight, h).flatten(-2) + u)

    def value_and_jacobian_diag(self, h: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f and diag(df/dh) = (1 - f^2) * diag(W): both (..., D)."""
        f = self(h, u)
        return f, (1 - f * f) * torch.diagonal(self.weight, dim1=-2, dim2=-1).flatten()

    def jacobian_diag(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.value_and_jacobian_diag(h, u)[1]


class GRURecurrence(nn.Module):
    """The GRU update given the drive u = (W_ir x + b_ir, W_iz x + b_iz, W_in x + b_in):
    (..., D), (..., 3D) -> (..., D).

    weight: (H, 3 Dh, Dh), per head the rows of (W_hr, W_hz, W_hn); bias: (3, D) = (b_hr, b_hz, b_hn).
    """

    diagonal = False

    def __init__(self, d_state: int, num_heads: int = 1):
        super().__init__()
        head_size = _check_heads(d_state, num_heads)
        self.d_state, self.num_heads, self.n_gates = d_state, num_heads, 3
        k = 1 / math.sqrt(head_size)
        self.weight = nn.Parameter(_uniform_(torch.empty(num_heads, 3 * head_size, head_size), k))
        self.bias = nn.Parameter(_uniform_(torch.empty(3, d_state), k))

    def _recurrent_term(self, h: torch.Tensor) -> torch.Tensor:
        """W_h h + b_h: (..., D) -> (..., 3, D), gates (r, z, n)."""
        heads, rows, head_size = self.weight.shape
        g = _block_matvec(self.weight, h).reshape(*h.shape[:-1], heads, 3, head_size)
        return g.transpose(-3, -2).reshape(*h.shape[:-1], 3, self.d_state) + self.bias

    def _gates(self, h: torch.Tensor, u: torch.Tensor):
        g_r, g_z, g_n = self._recurrent_term(h).unbind(-2)
        u_r, u_z, u_n = _split_gates(u, self.d_state)
        r = torch.sigmoid(u_r + g_r)
        z = torch.sigmoid(u_z + g_z)
        n = torch.tanh(torch.addcmul(u_n, r, g_n))
        return r, z, n, g_n

    def forward(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        r, z, n, _ = self._gates(h, u)
        return torch.addcmul(n, z, h - n)

    def _weight_diagonals(self) -> torch.Tensor:
        """diag(W_hr), diag(W_hz), diag(W_hn): (3, D)."""
        heads, rows, head_size = self.weight.shape
        blocks = self.weight.reshape(heads, 3, head_size, head_size)
        return torch.diagonal(blocks, dim1=-2, dim2=-1).transpose(0, 1).reshape(3, self.d_state)

    def value_and_jacobian_diag(self, h: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f and diag(df/dh) = z + (h - n) z (1 - z) w_z + (1 - z)(1 - n^2)(g_n r (1 - r) w_r + r w_n)."""
        r, z, n, g_n = self._gates(h, u)
        return _gru_value_and_jacobian_diag(h, r, z, n, g_n, *self._weight_diagonals())

    def jacobian_diag(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.value_and_jacobian_diag(h, u)[1]


class DiagGRURecurrence(nn.Module):
    """The GRU update with diagonal recurrent weights, a: (3, D) = (a_r, a_z, a_n), bias: (D,) = b_hn:

        r = sigmoid(u_r + a_r h)   z = sigmoid(u_z + a_z h)   n = tanh(u_n + r (a_n h + b_hn))
        h' = (1 - z) n + z h                                     (..., D), (..., 3D) -> (..., D)

    (The recurrent biases of r and z would only add to the drive's; that of n is scaled by r.)
    """

    diagonal = True

    def __init__(self, d_state: int, num_heads: int = 1):
        super().__init__()
        if num_heads != 1:
            raise ValueError(
                f"diag_gru has no heads (its units are independent already); got num_heads={num_heads}, use 1")
        _check_heads(d_state, 1)
        self.d_state, self.num_heads, self.n_gates = d_state, 1, 3
        self.weight = nn.Parameter(_uniform_(torch.empty(3, d_state), 1.0))
        self.bias = nn.Parameter(_uniform_(torch.empty(d_state), 1.0))

    def _gates(self, h: torch.Tensor, u: torch.Tensor):
        u_r, u_z, u_n = _split_gates(u, self.d_state)
        a_r, a_z, a_n = self.weight
        g_n = torch.addcmul(self.bias, a_n, h)
        r = torch.sigmoid(torch.addcmul(u_r, a_r, h))
        z = torch.sigmoid(torch.addcmul(u_z, a_z, h))
        n = torch.tanh(torch.addcmul(u_n, r, g_n))
        return r, z, n, g_n

    def forward(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        r, z, n, _ = self._gates(h, u)
        return torch.addcmul(n, z, h - n)

    def value_and_jacobian_diag(self, h: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f and df/dh = z + (h - n) z (1 - z) a_z + (1 - z)(1 - n^2)(g_n r (1 - r) a_r + r a_n) (exact: diagonal)."""
        r, z, n, g_n = self._gates(h, u)
        return _gru_value_and_jacobian_diag(h, r, z, n, g_n, *self.weight)

    def jacobian_diag(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.value_and_jacobian_diag(h, u)[1]


class RecurrentCell(nn.Module):
    """f(h, x) = recurrence(h, drive(x)): (..., D), (..., d_input) -> (..., D). See the module docstring."""

    def __init__(self, d_input: int, recurrence: nn.Module):
        super().__init__()
        self.recurrence = recurrence
        self.drive = nn.Linear(d_input, recurrence.n_gates * recurrence.d_state)
        k = 1 / math.sqrt(recurrence.d_state // recurrence.num_heads)
        _uniform_(self.drive.weight, k)
        _uniform_(self.drive.bias, k)
        self.d_state, self.num_heads, self.diagonal = recurrence.d_state, recurrence.num_heads, recurrence.diagonal

    def forward(self, h_prev: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.recurrence(h_prev, self.drive(x))

    def value_and_jacobian_diag(self, h_prev: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.recurrence.value_and_jacobian_diag(h_prev, self.drive(x))

    def jacobian_diag(self, h_prev: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.recurrence.jacobian_diag(h_prev, self.drive(x))


class ElmanCell(RecurrentCell):
    """h = tanh(W h + U x + b), dense (block-diagonal with heads) W."""

    def __init__(self, d_input: int, d_state: int, num_heads: int = 1):
        super().__init__(d_input, ElmanRecurrence(d_state, num_heads))


class GRUCell(RecurrentCell):
    """The standard GRU (torch.nn.GRUCell's equations), dense (block-diagonal with heads) recurrent weights."""

    def __init__(self, d_input: int, d_state: int, num_heads: int = 1):
        super().__init__(d_input, GRURecurrence(d_state, num_heads))


class DiagGRUCell(RecurrentCell):
    """The GRU with diagonal recurrent weights (ParaGRU): exact Newton with a diagonal Jacobian."""

    def __init__(self, d_input: int, d_state: int, num_heads: int = 1):
        super().__init__(d_input, DiagGRURecurrence(d_state, num_heads))


CELLS = {"elman": ElmanCell, "gru": GRUCell, "diag_gru": DiagGRUCell}


def make_cell(kind: str, d_input: int, d_state: int, num_heads: int = 1) -> RecurrentCell:
    """The cell named `kind` (one of CELLS) reading inputs of size d_input."""
    if kind not in CELLS:
        raise ValueError(f"cell={kind!r} is not one of {sorted(CELLS)}")
    return CELLS[kind](d_input, d_state, num_heads)
