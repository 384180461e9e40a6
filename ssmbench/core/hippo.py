"""HiPPO matrices and their normal-plus-low-rank (NPLR) and diagonal-plus-low-rank (DPLR) forms.

Each measure gives a state matrix A (N, N) and input vector B (N,) of the continuous system
x'(t) = A x(t) + B u(t) (Gu et al. 2020, 2022), in float64:

    legs  scaled Legendre     A_nk = -sqrt(2n+1) sqrt(2k+1) (n > k), -(n+1) (n = k), 0 (n < k)
                              B_n  = sqrt(2n+1)
    legt  translated Legendre A_nk = -sqrt(2n+1) sqrt(2k+1) (n >= k), -sqrt(2n+1) sqrt(2k+1) (-1)^(n-k) (n < k)
          (window length 1)   B_n  = sqrt(2n+1)
    fout  translated Fourier  basis 1, sqrt2 cos(2 pi k x), sqrt2 sin(2 pi k x) on the window [t-1, t]:
          (window length 1)   A = J - b b^T, B = b, with b = (1, sqrt2, 0, sqrt2, 0, ...) the basis at x = 0
                              and J_{2k-1, 2k} = 2 pi k = -J_{2k, 2k-1} (the derivative of the basis);
                              for even N the last basis function is the cosine of frequency N/2
                              without its sine, which leaves one unreachable mode with eigenvalue 0

Low-rank corrections (P has one row per rank, shape (r, N)):

    nplr:  A = S - P^T P  with S = A + P^T P normal (skew-symmetric plus c I):
           legs  r = 1, P_n = sqrt(n + 1/2), c = -1/2
           legt  r = 2, P = (sqrt(n + 1/2), (-1)^n sqrt(n + 1/2)), c = 0
           fout  r = 1, P = b, c = 0
    dplr:  A = V (diag(Lambda) - P P^*) V^* with V unitary, from the eigendecomposition of S
           computed with a Hermitian eigensolver on -i (S - c I).

HiPPO-N (S5, Smith et al. 2023): the normal part S of legs alone, diagonalized (`hippo_normal`),
optionally as a block-diagonal matrix of J copies of the HiPPO-N of size N/J.
"""

from __future__ import annotations

import math

import torch

MEASURES = ("legs", "legt", "fout")


def _check_size(N: int) -> None:
    if not isinstance(N, int) or N < 1:
        raise ValueError(f"HiPPO state size N must be a positive integer, got {N!r}")


def hippo_legs(N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HiPPO-LegS: (A (N, N), B (N,)) float64, A lower triangular with diagonal -(n+1)."""
    _check_size(N)
    r = torch.sqrt(2 * torch.arange(N, dtype=torch.float64) + 1)
    A = -torch.tril(r[:, None] * r[None, :], diagonal=-1) - torch.diag(torch.arange(1, N + 1, dtype=torch.float64))
    return A, r.clone()


def hippo_legt(N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HiPPO-LegT (window length 1, orthonormal basis): (A (N, N), B (N,)) float64."""
    _check_size(N)
    n = torch.arange(N, dtype=torch.float64)
    r = torch.sqrt(2 * n + 1)
    sign = torch.where(n[:, None] >= n[None, :], 1.0, (-1.0) ** (n[:, None] - n[None, :]))
    return -r[:, None] * r[None, :] * sign, r.clone()


def _fout_basis_at_zero(N: int) -> torch.Tensor:
    """b_n = g_n(0) for the basis g_0 = 1, g_{2k-1} = sqrt2 cos(2 pi k x), g_{2k} = sqrt2 sin(2 pi k x): (N,)."""
    b = torch.zeros(N, dtype=torch.float64)
    b[0] = 1.0
    b[1::2] = math.sqrt(2.0)
    return b


def hippo_fout(N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HiPPO-FouT (window length 1): (A = J - b b^T (N, N), B = b (N,)) float64."""
    _check_size(N)
    b = _fout_basis_at_zero(N)
    J = torch.zeros(N, N, dtype=torch.float64)
    for k in range(1, (N - 1) // 2 + 1):
        J[2 * k - 1, 2 * k] = 2 * math.pi * k
        J[2 * k, 2 * k - 1] = -2 * math.pi * k
    return J - b[:, None] * b[None, :], b.clone()


def _check_measure(measure: str) -> None:
    if measure not in MEASURES:
        raise ValueError(f"unknown HiPPO measure {measure!r}: use one of {list(MEASURES)}")


def nplr(measure: str, N: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A (N, N), P (r, N), B (N,)) float64 with A + P^T P normal (see the module docstring)."""
    _check_measure(measure)
    if measure == "legs":
        A, B = hippo_legs(N)
        P = torch.sqrt(torch.arange(N, dtype=torch.float64) + 0.5)[None, :]
    elif measure == "legt":
        A, B = hippo_legt(N)
        half = torch.sqrt(torch.arange(N, dtype=torch.float64) + 0.5)
        P = torch.stack([half, half * (-1.0) ** torch.arange(N, dtype=torch.float64)])
    else:
        A, B = hippo_fout(N)
        P = _fout_basis_at_zero(N)[None, :]
    return A, P, B


def _conjugate_half(omega: torch.Tensor, V: torch.Tensor, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """From the eigenpairs (omega (N,), V (N, N)) of the Hermitian -iK, K real skew-symmetric, keep
    one eigenvector of each conjugate pair: those with omega > tol, and for the null space (even
    dimension) the vectors (r_2j + i r_2j+1)/sqrt2 built from a real orthonormal basis r of it."""
    positive = omega > tol
    null = omega.abs() <= tol
    n_null = int(null.sum())
    if n_null % 2:
        raise ValueError(f"the normal part has an odd-dimensional null space ({n_null}); use an even N")
    omegas, vectors = [omega[positive]], [V[:, positive]]
    if n_null:
        basis = torch.cat([V[:, null].real, V[:, null].imag], dim=1)
        U, s, _ = torch.linalg.svd(basis, full_matrices=False)
        real_basis = U[:, :n_null]
        paired = torch.complex(real_basis[:, 0::2], real_basis[:, 1::2]) / math.sqrt(2.0)
        omegas.append(torch.zeros(n_null // 2, dtype=omega.dtype))
        vectors.append(paired)
    omega, V = torch.cat(omegas), torch.cat(vectors, dim=1)
    order = torch.argsort(omega)
    return omega[order], V[:, order]


def dplr(
    measure: str, N: int, conj_sym: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Lambda, P, B, V) complex128 with A = V (diag(Lambda) - P P^*) V^*, V unitary (P P^* = sum_r p_r p_r^*).

    conj_sym=False: Lambda (N,), P (r, N), B (N,), V (N, N), and the identity above holds exactly.
    conj_sym=True (N even): only the eigenvalues with Im(Lambda) >= 0, one of each conjugate pair:
    Lambda (N/2,), P (r, N/2), B (N/2,), V (N, N/2); the discarded half is the complex conjugate, so
    A = 2 Re(V diag(Lambda) V^*) - W^T W with W = 2 Re(P V^T) (r, N) (the real low-rank factor).
    Lambda = c + i omega where S = A + P^T P = c I + K, K skew-symmetric, and omega, V are the
    eigenpairs of the Hermitian matrix -i K; B and P are expressed in that basis: V^* B, V^* p_r.
    """
    A, P, B = nplr(measure, N)
    S = A + P.T @ P
    c = torch.diagonal(S).mean()
    K = S - c * torch.eye(N, dtype=torch.float64)
    if not torch.allclose(K, -K.T, atol=1e-9 * max(1.0, float(K.abs().max()))):
        raise ValueError(f"measure {measure}: A + P^T P is not a multiple of I plus a skew-symmetric matrix")
    omega, V = torch.linalg.eigh(-1j * K.to(torch.complex128))
    if conj_sym:
        if N % 2:
            raise ValueError(f"dplr(conj_sym=True) keeps N/2 conjugate pairs and needs an even N, got N={N}")
        omega, V = _conjugate_half(omega, V, tol=1e-9 * max(1.0, float(omega.abs().max())))
    Lambda = torch.complex(torch.full_like(omega, float(c)), omega)
    Vh = V.conj().T
    return Lambda, P.to(torch.complex128) @ Vh.T, Vh @ B.to(torch.complex128), V


def hippo_normal(N: int, blocks: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """HiPPO-N diagonalized, one eigenvalue of each conjugate pair: (Lambda (N/2,), V (N, N/2)) complex128.

    S_b = A + P^T P (b = N / blocks) is the normal part of HiPPO-LegS of size b (`nplr("legs", b)`),
    S = block_diag(S_b, ..., S_b) (N, N) with `blocks` copies (S5's J; blocks=1: S = S_b), and

        S = V diag(Lambda) V^* + conj(V) diag(conj(Lambda)) V^T = 2 Re(V diag(Lambda) V^*),
        Re(Lambda) = -1/2, Im(Lambda) >= 0, V^* V = I, V^T V = 0 (V block-diagonal, (b, b/2) blocks),

    so [V, conj(V)] is unitary and V^* maps a real input matrix B (N, H) into the eigenbasis, B~ = V^* B
    (N/2, H), while a real output matrix C (H, N) becomes C~ = C V (H, N/2). b must be even.
    """
    _check_size(N)
    if not isinstance(blocks, int) or blocks < 1 or N % blocks or (N // blocks) % 2:
        raise ValueError(f"hippo_normal: blocks={blocks!r} must divide N={N} into blocks of even size "
                         f"(N/blocks conjugate pairs per block); choose N a multiple of 2 x blocks")
    Lambda, _, _, V = dplr("legs", N // blocks)
    return Lambda.repeat(blocks), torch.block_diag(*[V] * blocks)
