"""The convolution kernel of a discrete linear state-space model, K_l = C Ab^l Bb for l < L.

    kernel_reference  repeated matrix-vector products (slow, exact; the reference)
    kernel_dplr       S4: A = diag(Lambda) - P Q^* discretized by the bilinear method, through the
                      truncated generating function at the roots of unity, the Woodbury identity
                      and Cauchy kernels, then an inverse FFT
    kernel_diag       S4D: diagonal A (zoh or bilinear), as a Vandermonde product

S4 trains C~ = C (I - Ab^L) in place of C; `c_from_ct` / `ct_from_c` convert between the two.
Leading dimensions `...` broadcast across all arguments (e.g. channels and features (C, H)).
"""

from __future__ import annotations

import functools
import math

import torch

from ssmbench.core.cauchy import cauchy
from ssmbench.core.discretize import bilinear_diag, step_per_state, zoh_diag

DIAG_METHODS = ("zoh", "bilinear")


def _check_length(L: int) -> None:
    if not isinstance(L, int) or L < 1:
        raise ValueError(f"kernel length L must be a positive integer, got {L!r}")


def kernel_reference(Ab: torch.Tensor, Bb: torch.Tensor, Cb: torch.Tensor, L: int) -> torch.Tensor:
    """K_l = Cb Ab^l Bb for l = 0..L-1 by repeated products: Ab (..., N, N), Bb, Cb (..., N) -> (..., L)."""
    _check_length(L)
    x, out = Bb, []
    for _ in range(L):
        out.append((Cb * x).sum(-1))
        x = (Ab @ x[..., None])[..., 0]
    return torch.stack(out, dim=-1)


def _power(Ab: torch.Tensor, L: int) -> torch.Tensor:
    """Ab^L by repeated squaring: (..., N, N) -> (..., N, N)."""
    return torch.linalg.matrix_power(Ab, L)


def ct_from_c(C: torch.Tensor, Ab: torch.Tensor, L: int) -> torch.Tensor:
    """C~ = C (I - Ab^L): C (..., N), Ab (..., N, N) -> (..., N)."""
    return C - (C[..., None, :] @ _power(Ab, L))[..., 0, :]


def c_from_ct(Ct: torch.Tensor, Ab: torch.Tensor, L: int) -> torch.Tensor:
    """C = C~ (I - Ab^L)^{-1} (a dense N x N solve): Ct (..., N), Ab (..., N, N) -> (..., N)."""
    eye = torch.eye(Ab.shape[-1], dtype=Ab.dtype, device=Ab.device)
    return torch.linalg.solve((eye - _power(Ab, L)).mT, Ct[..., None])[..., 0]


@functools.lru_cache(maxsize=64)
def _roots_of_unity(L: int, conj_sym: bool, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """omega_k = exp(-2 pi i k / L), k < n (n = L // 2 + 1 if conj_sym else L), as the Cauchy nodes
    s_k = (1 - omega_k) / (1 + omega_k) (conj_sym: followed by their conjugates, (2n,)) and 1 / (1 + omega_k) (n,).
    Constants, cached per (L, conj_sym, dtype, device): a training step neither recomputes nor copies them.

    Computed in float64: for k = L/2, 1 + omega_k = -i sin(fl(pi)) ~ 1e-16 i is tiny but never zero
    (pi is not a float), and the two factors cancel to working precision in the generating function.
    """
    n = L // 2 + 1 if conj_sym else L
    omega = torch.polar(torch.ones(n, dtype=torch.float64), -2 * math.pi / L * torch.arange(n, dtype=torch.float64))
    s = ((1 - omega) / (1 + omega)).to(device=device, dtype=dtype)
    return torch.cat([s, s.conj()]) if conj_sym else s, (1 / (1 + omega)).to(device=device, dtype=dtype)


def kernel_dplr(
    Lambda: torch.Tensor,
    P: torch.Tensor,
    Q: torch.Tensor,
    B: torch.Tensor,
    Ct: torch.Tensor,
    dt,
    L: int,
    *,
    conj_sym: bool = False,
) -> torch.Tensor:
    """Kernel of the bilinear discretization of (A = diag(Lambda) - sum_r p_r q_r^*, B, C) with C~ = C (I - Ab^L).

    Lambda, B, Ct (..., N); P, Q (..., r, N) (rank r >= 1); dt (...) or a float; L >= 1.
    Returns K_l = C Ab^l Bb, l < L: (..., L) complex, equal to kernel_reference(Ab, Bb, C, L).

    At the roots of unity omega_k = exp(-2 pi i k / L) the truncated generating function is
        K^(omega) = sum_{l<L} K_l omega^l = C~ (I - Ab omega)^{-1} Bb
                  = dt / (1 + omega) * C~ (s I - dt/2 A)^{-1} B,    s = (1 - omega) / (1 + omega),
    and with R = diag(1 / (s - dt/2 Lambda)), P' = dt/2 P, Woodbury gives
        C~ (s I - dt/2 A)^{-1} B = k(C~, B) - k(C~, P') (I_r + k(Q^*, P'))^{-1} k(Q^*, B),
    where k(X, Y) = sum_i X_i Y_i / (s - dt/2 Lambda_i) are Cauchy kernels; K = ifft(K^).

    conj_sym=True: the arguments are one half of a system of size 2N whose other half is their
    complex conjugate (Lambda, P, Q, B, C~ conjugated). That system is real, so the result is its
    real kernel (..., L), from the nodes k <= L/2 and an inverse real FFT; each Cauchy sum runs over
    both halves as k(v)(s) + conj(k(v)(conj s)).
    """
    _check_length(L)
    if P.dim() < 2 or Q.dim() < 2 or P.shape[-2] != Q.shape[-2]:
        raise ValueError(
            f"kernel_dplr: P and Q must have shape (..., r, N) with the same rank r, got {tuple(P.shape)}, {tuple(Q.shape)}"
        )
    rank, N = P.shape[-2], Lambda.shape[-1]
    if not (P.shape[-1] == Q.shape[-1] == B.shape[-1] == Ct.shape[-1] == N):
        raise ValueError("kernel_dplr: Lambda, P, Q, B and Ct need the same state size N in their last dimension")
    dt = step_per_state(dt, Lambda)
    cdtype = torch.promote_types(torch.promote_types(Lambda.dtype, Ct.dtype), torch.complex64)
    batch = torch.broadcast_shapes(
        Lambda.shape[:-1], P.shape[:-2], Q.shape[:-2], B.shape[:-1], Ct.shape[:-1], dt.shape[:-1]
    )
    left = torch.cat([Ct.expand(*batch, N)[..., None, :], Q.conj().expand(*batch, rank, N)], dim=-2)
    right = torch.cat([B.expand(*batch, N)[..., None, :], (dt[..., None] / 2 * P).expand(*batch, rank, N)], dim=-2)
    v = (left[..., :, None, :] * right[..., None, :, :]).to(cdtype)   # (..., 1+r, 1+r, N)
    w = (dt / 2 * Lambda).to(cdtype)[..., None, None, :]                # (..., 1, 1, N)

    nodes, inv_one_plus = _roots_of_unity(L, conj_sym, cdtype, Lambda.device)
    k = cauchy(v, nodes, w)                                            # (..., 1+r, 1+r, n or 2n)
    if conj_sym:
        n_nodes = inv_one_plus.shape[-1]
        k = k[..., :n_nodes] + k[..., n_nodes:].conj()

    k00, k01, k10, k11 = k[..., 0, 0, :], k[..., 0, 1:, :], k[..., 1:, 0, :], k[..., 1:, 1:, :]
    if rank == 1:
        resolvent = k00 - k01[..., 0, :] * k10[..., 0, :] / (1 + k11[..., 0, 0, :])
    else:
        eye = torch.eye(rank, dtype=cdtype, device=Lambda.device)
        M = eye + k11.movedim(-1, -3)                                   # (..., n, r, r)
        sol = torch.linalg.solve(M, k10.movedim(-1, -2)[..., None])[..., 0]  # (..., n, r)
        resolvent = k00 - (k01.movedim(-1, -2) * sol).sum(-1)
    khat = resolvent * dt * inv_one_plus
    if conj_sym:
        return torch.fft.irfft(khat, n=L)
    return torch.fft.ifft(khat, n=L)


def kernel_diag(
    Lambda: torch.Tensor, B: torch.Tensor, C: torch.Tensor, dt, L: int, method: str = "zoh"
) -> torch.Tensor:
    """S4D kernel K_l = sum_n C_n Bb_n Ab_n^l (a Vandermonde product) of a diagonal system.

    Lambda, B, C (..., N); dt (...) or a float; method "zoh" (Ab = exp(dt Lambda)) or "bilinear".
    Returns (..., L) complex, equal to kernel_reference(diag(Ab), Bb, C, L). A real system stored as
    one conjugate half has the real kernel 2 Re(K).
    """
    _check_length(L)
    if method not in DIAG_METHODS:
        raise ValueError(f"kernel_diag: unknown method {method!r}, use one of {list(DIAG_METHODS)}")
    if not Lambda.shape[-1] == B.shape[-1] == C.shape[-1]:
        raise ValueError(
            f"kernel_diag: Lambda, B and C need the same state size N in their last dimension, got "
            f"{Lambda.shape[-1]}, {B.shape[-1]}, {C.shape[-1]}"
        )
    l = torch.arange(L, device=Lambda.device)
    if method == "zoh":
        Ab, Bb = zoh_diag(Lambda, B, dt)
        log_Ab = step_per_state(dt, Lambda) * Lambda
    else:
        Ab, Bb = bilinear_diag(Lambda, B, dt)
        log_Ab = torch.log(Ab)
    vandermonde = torch.exp(log_Ab[..., None] * l)                    # (..., N, L)
    return torch.einsum("...n,...nl->...l", C * Bb, vandermonde)
