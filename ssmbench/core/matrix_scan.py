"""Linear recurrences with dense transition matrices, h_t = A_t h_{t-1} + b_t, in parallel.

    matrix_scan(A, b, h0=None, reverse=False)            the fast path (odd-even parallel scan)
    matrix_scan_reference(A, b, h0=None, reverse=False)  the plain loop it is tested against

Shapes: A: (B, L, D, D), b: (B, L, D), h0: (B, D) or None (zero) -> h: (B, L, D), in the promoted
dtype of A, b and h0 (real or complex).
Forward:  h_t = A_t h_{t-1} + b_t,  t = 0 .. L-1,  h_{-1} = h0.
Reverse:  h_t = A_t h_{t+1} + b_t,  t = L-1 .. 0,  h_L  = h0.
(The same conventions as `ssmbench.core.scan.linear_scan`, whose a_t is a diagonal A_t.)

The odd-even scan first folds h0 into the first step (b_0 <- A_0 h0 + b_0, so h_{-1} = 0). Pairs
of consecutive steps compose into one affine step,
    h_{2i+1} = (A_{2i+1} A_{2i}) h_{2i-1} + (A_{2i+1} b_{2i} + b_{2i+1}),
which is a recurrence of half the length over the odd positions, solved recursively; the even
positions then follow in one batched step, h_{2i} = A_{2i} h_{2i-1} + b_{2i}. That is log2(L)
levels of batched D x D matrix products, O(L D^3) work in all (about twice the loop's matrix
products, since the loop needs only matrix-vector products, O(L D^2)), and no length restriction:
an odd length leaves its last step to the fill-in. Used by full-Jacobian Newton (DEER) in
`ssmbench.core.newton`; autograd differentiates through it.
"""

from __future__ import annotations

import torch


def _check(A: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None, name: str) -> torch.dtype:
    """Validate the shapes; return the dtype of h (A, b and h0 promoted)."""
    if b.dim() != 3:
        raise ValueError(f"{name}: b must be (B, L, D), got shape {tuple(b.shape)}")
    batch, length, width = b.shape
    if tuple(A.shape) != (batch, length, width, width):
        raise ValueError(f"{name}: A must be (B, L, D, D) = {(batch, length, width, width)} to match b, "
                         f"got shape {tuple(A.shape)}")
    dtype = torch.promote_types(A.dtype, b.dtype)
    if h0 is not None:
        if tuple(h0.shape) != (batch, width):
            raise ValueError(f"{name}: h0 must be (B, D) = {(batch, width)}, got shape {tuple(h0.shape)}")
        dtype = torch.promote_types(dtype, h0.dtype)
    if not (dtype.is_floating_point or dtype.is_complex):
        raise ValueError(f"{name}: A and b must be real or complex floating point, got {A.dtype} and {b.dtype}")
    return dtype


def _matvec(A: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(..., D, D), (..., D) -> (..., D): A v."""
    return (A @ v.unsqueeze(-1)).squeeze(-1)


def _odd_even(A: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """h_t = A_t h_{t-1} + b_t with h_{-1} = 0 (so A_0 is never used): (B, L, D, D), (B, L, D) -> (B, L, D)."""
    batch, length, width = b.shape
    if length == 1:
        return b
    pairs = length // 2
    A_even, A_odd = A[:, 0 : 2 * pairs : 2], A[:, 1 : 2 * pairs : 2]
    b_even, b_odd = b[:, 0 : 2 * pairs : 2], b[:, 1 : 2 * pairs : 2]
    # Positions 1, 3, ..., 2 * pairs - 1 obey a recurrence of their own, of half the length.
    h_odd = _odd_even(A_odd @ A_even, _matvec(A_odd, b_even) + b_odd)
    # Positions 2, 4, ...: one step from the odd position before; position 0 is b_0 (h_{-1} = 0).
    n_even = (length + 1) // 2
    h_even = torch.cat([b[:, :1], _matvec(A[:, 2::2], h_odd[:, : n_even - 1]) + b[:, 2::2]], dim=1)
    h = torch.stack([h_even[:, :pairs], h_odd], dim=2).reshape(batch, 2 * pairs, width)
    if length % 2:
        h = torch.cat([h, h_even[:, -1:]], dim=1)
    return h


def matrix_scan(
    A: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None, reverse: bool = False
) -> torch.Tensor:
    """h_t = A_t h_{t-1} + b_t (reverse: h_t = A_t h_{t+1} + b_t) by the odd-even parallel scan.

    A: (B, L, D, D), b: (B, L, D), h0: (B, D) or None (zero) -> h: (B, L, D). Real or complex;
    differentiable in A, b and h0 through autograd. See the module docstring for the algorithm.
    """
    dtype = _check(A, b, h0, "matrix_scan")
    A, b = A.to(dtype), b.to(dtype)
    if b.shape[1] == 0:
        return b.clone()
    if reverse:
        A, b = A.flip(1), b.flip(1)
    if h0 is not None:
        b = torch.cat([b[:, :1] + _matvec(A[:, 0], h0.to(dtype)).unsqueeze(1), b[:, 1:]], dim=1)
    h = _odd_even(A, b)
    return h.flip(1) if reverse else h


def matrix_scan_reference(
    A: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None, reverse: bool = False
) -> torch.Tensor:
    """The plain loop for h_t = A_t h_{t-1} + b_t (reverse: h_t = A_t h_{t+1} + b_t).

    A: (B, L, D, D), b: (B, L, D), h0: (B, D) or None (zero) -> h: (B, L, D); autograd
    differentiates through the loop. For testing matrix_scan, not for speed.
    """
    dtype = _check(A, b, h0, "matrix_scan_reference")
    batch, length, width = b.shape
    h = torch.zeros(batch, width, dtype=dtype, device=b.device) if h0 is None else h0.to(dtype)
    A_steps, b_steps = A.to(dtype).unbind(1), b.to(dtype).unbind(1)
    hs = [None] * length
    for t in range(length - 1, -1, -1) if reverse else range(length):
        h = _matvec(A_steps[t], h) + b_steps[t]
        hs[t] = h
    return torch.stack(hs, dim=1) if length else b.to(dtype).clone()
