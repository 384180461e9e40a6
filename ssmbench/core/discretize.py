"""Discretization of x'(t) = A x(t) + B u(t) with step dt into x_k = Ab x_{k-1} + Bb u_k.

    bilinear (Tustin):  Ab = (I - dt/2 A)^{-1} (I + dt/2 A),   Bb = (I - dt/2 A)^{-1} dt B
    zoh (diagonal A):   Ab = exp(dt Lambda),                   Bb = (exp(dt Lambda) - 1) / Lambda * B

`dt` is a float or a tensor of the leading (batch) shape `...` of the system; it broadcasts over
the state axis. Complex inputs give complex outputs.
"""

from __future__ import annotations

import torch

# A DPLR matrix diag(d) - sum_r p_r q_r^*, stored as (d (..., N), P (..., r, N), Q (..., r, N)).
DPLRMatrix = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def step_per_state(dt, like: torch.Tensor) -> torch.Tensor:
    """dt (...) or a float -> (..., 1) on the device of `like`, broadcasting over the state axis
    (a float takes the real precision of `like`)."""
    if not isinstance(dt, torch.Tensor):
        dt = torch.tensor(dt, dtype=like.real.dtype if like.is_complex() else like.dtype)
    return dt.to(like.device)[..., None]


def bilinear(A: torch.Tensor, B: torch.Tensor, dt) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense bilinear discretization: A (..., N, N), B (..., N), dt (...) -> Ab (..., N, N), Bb (..., N)."""
    dt = step_per_state(dt, A)
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    backward = eye - dt[..., None] / 2 * A
    Ab = torch.linalg.solve(backward, eye + dt[..., None] / 2 * A)
    Bb = torch.linalg.solve(backward, (dt * B)[..., None])[..., 0]
    return Ab, Bb


def zoh_diag(Lambda: torch.Tensor, B: torch.Tensor, dt) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-order hold of a diagonal system: Lambda (..., N) (nonzero), B (..., N), dt (...) -> Ab, Bb (..., N)."""
    dtA = step_per_state(dt, Lambda) * Lambda
    Ab = torch.exp(dtA)
    return Ab, (Ab - 1) / Lambda * B


def bilinear_diag(Lambda: torch.Tensor, B: torch.Tensor, dt) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear discretization of a diagonal system: Ab = (1 + dt/2 Lambda) / (1 - dt/2 Lambda),
    Bb = dt B / (1 - dt/2 Lambda); Lambda, B (..., N), dt (...) -> Ab, Bb (..., N)."""
    half = step_per_state(dt, Lambda) / 2
    backward = 1 - half * Lambda
    return (1 + half * Lambda) / backward, 2 * half * B / backward


def dplr_matvec(M: DPLRMatrix, x: torch.Tensor) -> torch.Tensor:
    """(diag(d) - sum_r p_r q_r^*) x for M = (d, P, Q): x (..., N) -> (..., N) in O(N r)."""
    d, P, Q = M
    coeff = (Q.conj() * x[..., None, :]).sum(-1)
    return d * x - (P * coeff[..., None]).sum(-2)


def bilinear_dplr(
    Lambda: torch.Tensor, P: torch.Tensor, Q: torch.Tensor, B: torch.Tensor, dt
) -> tuple[DPLRMatrix, DPLRMatrix, torch.Tensor]:
    """Bilinear discretization of A = diag(Lambda) - P^T conj(Q) (= sum_r p_r q_r^*) without a dense inverse.

    Lambda, B (..., N); P, Q (..., r, N); dt (...). Returns (A0, A1, Bb) with Ab = A1 A0 and
    Bb = 2 A1 B (..., N), where A0 and A1 are DPLR matrices (apply them with `dplr_matvec`):

        A0 = 2/dt I + A                          = diag(2/dt + Lambda) - P Q^*
        A1 = (2/dt I - A)^{-1}                   = diag(D) - (D P M^{-1}) (Q^* D)   (Woodbury)
             D = 1 / (2/dt - Lambda),  M = I_r + Q^* D P  (an r x r solve)

    since (I - dt/2 A)^{-1} = 2/dt A1 and I + dt/2 A = dt/2 A0.
    """
    two_over_dt = 2 / step_per_state(dt, Lambda)
    D = 1 / (two_over_dt - Lambda)
    DP = D[..., None, :] * P
    eye = torch.eye(P.shape[-2], dtype=DP.dtype, device=DP.device)
    M = eye + torch.einsum("...sn,...tn->...st", Q.conj(), DP)
    P1 = torch.linalg.solve(M.mT, DP)
    A0 = (two_over_dt + Lambda, P, Q)
    A1 = (D, P1, D.conj()[..., None, :] * Q)
    return A0, A1, 2 * dplr_matvec(A1, B)
