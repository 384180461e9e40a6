"""Nonlinear recurrences h_t = f(h_{t-1}, x_t) solved for all t at once by Newton's method.

    newton_solve(cell, x, h0, jacobian, max_iter, tol, damping, init) -> (h, info)
    newton_solve_reference(cell, x, h0)              the reference: the sequential rollout, one step at a time
    damped_step(a, b, y, h0, damping)                one quasi-ELK (Levenberg-Marquardt) step
    damped_step_reference(a, b, y, h0, damping)      the same step as a dense least-squares solve
    jacobian_blocks(cell, h_prev, x), jacobian_diagonal(cell, h_prev, x)   df/dh by torch.func

Shapes: x: (B, L, Din), h0: (B, D) -> h: (B, L, D), the states h_1 .. h_L after h_0 = h0.

Newton (DEER, Lim et al. 2024). The L equations r_t(h) = h_t - f(h_{t-1}, x_t) = 0 are solved
together. Linearizing f at the current trajectory h* with J_t = df/dh(h*_{t-1}, x_t) gives

    h_t = J_t h_{t-1} + (f(h*_{t-1}, x_t) - J_t h*_{t-1}),

a linear recurrence, solved by a parallel scan: `ssmbench.core.scan.linear_scan` when J_t is
diagonal, `ssmbench.core.matrix_scan.matrix_scan` (per head) when it is dense. Whatever J_t is,
after k steps h_1 .. h_k are exact (h_0 is known, and each step reproduces f at the exact prefix),
so from any start undamped iterations reach the solution in at most L steps; the iteration count
is therefore capped at L, and reaching L counts as converged.
  jacobian="full": J_t is the cell's whole Jacobian (block-diagonal with heads): exact Newton, DEER.
  jacobian="diag": J_t is its diagonal, an elementwise scan: quasi-DEER (Gonzalez et al. 2024).
      Exact Newton for cells whose Jacobian is diagonal (`cell.diagonal`, e.g. diag_gru);
      for dense cells a quasi-Newton method with the same fixed point (linear convergence).

Damping (quasi-ELK, Gonzalez et al. 2024). With damping = lambda > 0 each step is the
Levenberg-Marquardt step of the linearized problem,

    min over h of  sum_t |h_t - J_t h_{t-1} - b_t|^2 + lambda sum_t |h_t - h*_t|^2,
    b_t = f(h*_{t-1}, x_t) - J_t h*_{t-1},

i.e. Newton inside a trust region: lambda = 0 is Newton, large lambda barely moves. It is the
posterior mean of a linear-Gaussian state-space model (dynamics h_t = J_t h_{t-1} + b_t + unit
noise, observations h*_t with noise variance 1/lambda), computed by a Kalman filter and RTS
smoother, themselves parallel scans (see `damped_step`). Implemented for a diagonal J_t (quasi-ELK):
damping needs jacobian="diag" (or a diagonal cell). Damped steps keep the fixed point but lose the
L-step guarantee, so the cap is max_iter alone: on a cell so unstable that undamped Newton overflows,
damped steps stay bounded but take about L iterations, and like any Levenberg-Marquardt method they
can stall at a local minimum of sum_t |r_t|^2 (then max_iter ends in the fallback).

Stopping. After each step, stop when |h_new - h| <= tol + rtol |h_new| for every element. The
defaults depend on the dtype (DEFAULT_TOLERANCES): float32 tol = 1e-5, rtol = 1e-4; float64
tol = rtol = 1e-10. Exact Newton converges quadratically, so the returned iterate is far closer to
the solution than its last update; quasi-DEER on a dense cell converges linearly and its error is of
the order of the last update (`info["residual"]` reports it). With tol = rtol = 0 only max_iter (or
L) ends the iterations.
If the iterations have not converged after max_iter steps, or an iterate is not finite (NaN/inf:
divergence), the call falls back to `newton_solve_reference`; `info` records it and a warning is
logged. A non-finite x or h0, or a rollout that itself is not finite, raises an error: NaN/inf is
never returned silently.

info: iterations (Newton steps taken), residual (max_t |h_t - f(h_{t-1}, x_t)| of the returned
h), converged (bool), fallback (bool), reason (str, why the iterations ended).

Gradients (implicit function theorem). The iterations are not differentiated. With incoming
gradients g_t = dLoss/dh_t, the adjoint lambda_t = g_t + J_{t+1}^T lambda_{t+1} (lambda_L = g_L)
is a reverse linear scan with the Jacobians recomputed at the solution; then one vector-Jacobian
product of f at (h_{t-1}, x_t) with cotangent lambda_t gives the gradients of x, of the cell's
parameters, and (at t = 1) of h0. This is exact for diagonal cells and for jacobian="full". For a
dense cell solved with jacobian="diag", backward="auto" uses the full (per-head) Jacobian in the
adjoint when the head size is at most FULL_BACKWARD_MAX_STATE (exact gradients), and otherwise its
diagonal: an approximate gradient that drops the off-diagonal terms of J_t^T in the adjoint.

The cell protocol (an nn.Module; this file only calls it, and uses torch.func on it):
    forward(h_prev, x) -> h        on any leading dimensions: (..., D), (..., Din) -> (..., D)
    d_state: int                   D
  optional:
    num_heads: int                 df/dh is block-diagonal with num_heads blocks of D / num_heads
    diagonal: bool                 df/dh is diagonal (then jacobian="diag" is exact Newton)
    jacobian_diag(h_prev, x)       the diagonal of df/dh_prev: (..., D)
    value_and_jacobian_diag(h_prev, x) -> (f, diag), sharing the work of the two
Without them the solver computes the Jacobian (its blocks, or their diagonals) with forward-mode
torch.func: D / num_heads Jacobian-vector products.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
from torch.autograd.function import once_differentiable

from ssmbench.core.matrix_scan import matrix_scan
from ssmbench.core.scan import linear_scan

log = logging.getLogger(__name__)

JACOBIANS = ("diag", "full")
INITS = ("zeros", "input")
BACKWARDS = ("auto", "diag", "full")
DEFAULT_TOLERANCES = {  # dtype -> (tol, rtol)
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-5, 1e-4),
    torch.float16: (1e-3, 1e-2),
    torch.bfloat16: (1e-2, 1e-2),
}
FULL_BACKWARD_MAX_STATE = 32  # head size up to which jacobian="diag" on a dense cell backpropagates exactly
CELL_BLOCK_BYTES = 1 << 19  # on a CPU the cell is evaluated on blocks of rows of this much state (_row_blocks)


def newton_solve_reference(cell: torch.nn.Module, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """h_t = f(h_{t-1}, x_t) for t = 1 .. L, one step at a time (the sequential rollout):
    (B, L, Din), (B, D) -> (B, L, D).

    The reference for `newton_solve` (and its fallback); autograd differentiates through the loop.
    """
    states, h = [], h0
    for x_t in x.unbind(1):
        h = cell(h, x_t)
        states.append(h)
    return torch.stack(states, dim=1) if states else h0.new_zeros(h0.shape[0], 0, h0.shape[1])


# ----------------------------------------------------------------------------------------------
# Jacobians


def _num_heads(cell: torch.nn.Module, width: int) -> int:
    heads = int(getattr(cell, "num_heads", 1))
    if heads < 1 or width % heads:
        raise ValueError(f"cell.num_heads={heads} must divide the state size {width}")
    return heads


def jacobian_blocks(cell: torch.nn.Module, h_prev: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The diagonal blocks of df/dh_prev by forward-mode AD: (..., D), (..., Din) -> (..., H, Dh, Dh).

    H = cell.num_heads (1 unless the cell declares heads), Dh = D / H; entry [..., k, i, j] is
    d f_{k Dh + i} / d h_{k Dh + j}. Costs Dh Jacobian-vector products: the tangent e_j repeated in
    every head gives column j of every block at once (the blocks do not interact).
    """
    width = h_prev.shape[-1]
    heads = _num_heads(cell, width)
    head_size = width // heads
    basis = torch.eye(head_size, dtype=h_prev.dtype, device=h_prev.device).repeat(1, heads)  # (Dh, D)

    def column(v: torch.Tensor) -> torch.Tensor:
        return torch.func.jvp(lambda h: cell(h, x), (h_prev,), (v.expand_as(h_prev),))[1]

    columns = torch.func.vmap(column)(basis)  # (Dh, ..., D): columns[j, ..., k Dh + i] = block_k[i, j]
    return columns.reshape(head_size, *h_prev.shape[:-1], heads, head_size).movedim(0, -1)


def jacobian_diagonal(cell: torch.nn.Module, h_prev: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The diagonal of df/dh_prev by forward-mode AD: (..., D), (..., Din) -> (..., D)."""
    return torch.diagonal(jacobian_blocks(cell, h_prev, x), dim1=-2, dim2=-1).flatten(-2)


def _value_and_jacobian(cell, h_prev, x, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """f(h_prev, x) and its Jacobian: diagonal (B, L, D) for kind "diag", blocks (B, L, H, Dh, Dh) for "full"."""
    if kind == "diag":
        if hasattr(cell, "value_and_jacobian_diag"):
            return cell.value_and_jacobian_diag(h_prev, x)
        value = cell(h_prev, x)
        if hasattr(cell, "jacobian_diag"):
            return value, cell.jacobian_diag(h_prev, x)
        return value, jacobian_diagonal(cell, h_prev, x)
    return cell(h_prev, x), jacobian_blocks(cell, h_prev, x)


def _block_matvec(J: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B, L, H, Dh, Dh), (B, L, D) -> (B, L, D): the block-diagonal J times v."""
    heads, head_size = J.shape[-3], J.shape[-1]
    v = v.reshape(*v.shape[:-1], heads, head_size, 1)
    return (J @ v).flatten(-3)


def _block_scan(J: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None, reverse: bool = False) -> torch.Tensor:
    """h_t = J_t h_{t-1} + b_t per head: J (B, L, H, Dh, Dh), b (B, L, D), h0 (B, D) or None -> (B, L, D)."""
    batch, length, heads, head_size, _ = J.shape
    A = J.transpose(1, 2).reshape(batch * heads, length, head_size, head_size)
    bb = b.reshape(batch, length, heads, head_size).transpose(1, 2).reshape(batch * heads, length, head_size)
    hh = None if h0 is None else h0.reshape(batch * heads, head_size)
    h = matrix_scan(A, bb, hh, reverse=reverse)
    return h.reshape(batch, heads, length, head_size).transpose(1, 2).reshape(batch, length, heads * head_size)


# ----------------------------------------------------------------------------------------------
# Damped (quasi-ELK) step


def _compose_mobius(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The 2 x 2 products p @ q, scaled so the largest entry is 1: (4, ...) entries [m00, m01, m10, m11]."""
    r = torch.stack([p[0] * q[0] + p[1] * q[2], p[0] * q[1] + p[1] * q[3],
                     p[2] * q[0] + p[3] * q[2], p[2] * q[1] + p[3] * q[3]])
    return r / r.amax(dim=0, keepdim=True)


def _mobius_prefix(m: torch.Tensor) -> torch.Tensor:
    """Prefix products M_t ... M_1 of non-negative 2 x 2 matrices, each scaled to largest entry 1.

    m: (4, B, L, D), entries [m00, m01, m10, m11] of M_t along dim 0 -> (4, B, L, D). The odd-even
    scheme of `matrix_scan` (pairs compose, half-length recursion, even positions filled in);
    rescaling is free because the products are only used as Moebius maps (ratios).
    """
    length = m.shape[2]
    if length == 1:
        return m
    pairs = length // 2
    odd = _mobius_prefix(_compose_mobius(m[:, :, 1 : 2 * pairs : 2], m[:, :, 0 : 2 * pairs : 2]))
    n_even = (length + 1) // 2
    even = torch.cat([m[:, :, :1], _compose_mobius(m[:, :, 2::2], odd[:, :, : n_even - 1])], dim=2)
    out = torch.stack([even[:, :, :pairs], odd], dim=3).reshape(4, m.shape[1], 2 * pairs, m.shape[3])
    return torch.cat([out, even[:, :, -1:]], dim=2) if length % 2 else out


def damped_step(a: torch.Tensor, b: torch.Tensor, y: torch.Tensor, h0: torch.Tensor, damping: float) -> torch.Tensor:
    """The Levenberg-Marquardt (quasi-ELK) step for a diagonal linearization, elementwise:

        argmin over h_1..h_L of  sum_t (h_t - a_t h_{t-1} - b_t)^2 + damping sum_t (h_t - y_t)^2,  h_0 = h0.

    a, b, y: (B, L, D), h0: (B, D), damping > 0 -> h: (B, L, D). It is the smoothed mean of the
    state-space model h_t = a_t h_{t-1} + b_t + N(0, 1), y_t = h_t + N(0, 1/damping), h_0 = h0 known:
      filter variances  P_t = Pm_t / (1 + damping Pm_t),  Pm_t = a_t^2 P_{t-1} + 1,  P_0 = 0
          (a Moebius map of P_{t-1}, [[a^2, 1], [damping a^2, 1 + damping]], composed by a parallel
          prefix product of 2 x 2 non-negative matrices, no cancellation);
      filter means      m_t = (1 - K_t)(a_t m_{t-1} + b_t) + K_t y_t,  K_t = damping P_t,  m_0 = h0
          (a forward linear scan);
      smoothed means    s_t = m_t + G_t (s_{t+1} - a_{t+1} m_t - b_{t+1}),  G_t = P_t a_{t+1} / Pm_{t+1},
          s_L = m_L (a reverse linear scan).
    """
    if damping <= 0:
        raise ValueError(f"damped_step: damping must be positive, got {damping}")
    a2 = a * a
    one = torch.ones_like(a2)
    m = torch.stack([a2, one, damping * a2, (1 + damping) * one])
    m = m / m.amax(dim=0, keepdim=True)
    prefix = _mobius_prefix(m)
    P = prefix[1] / prefix[3]  # the prefix maps applied to P_0 = 0
    P_prev = torch.cat([torch.zeros_like(P[:, :1]), P[:, :-1]], dim=1)
    Pm = a2 * P_prev + 1
    keep = 1 / (1 + damping * Pm)  # 1 - K_t
    means = linear_scan(keep * a, keep * b + (1 - keep) * y, h0)
    gain = P[:, :-1] * a[:, 1:] / Pm[:, 1:]
    offset = means[:, :-1] - gain * (a[:, 1:] * means[:, :-1] + b[:, 1:])
    gain = torch.cat([gain, torch.zeros_like(a[:, :1])], dim=1)
    offset = torch.cat([offset, means[:, -1:]], dim=1)
    return linear_scan(gain, offset, reverse=True)


def damped_step_reference(
    a: torch.Tensor, b: torch.Tensor, y: torch.Tensor, h0: torch.Tensor, damping: float
) -> torch.Tensor:
    """`damped_step` as the normal equations of its least-squares problem, solved densely.

    With R = I - subdiag(a_2 .. a_L) and c = b + (a_1 h0, 0, ..., 0), the objective is
    |R h - c|^2 + damping |h - y|^2, minimized by (R^T R + damping I) h = R^T c + damping y,
    one L x L system per (batch, channel). (B, L, D) inputs, h0: (B, D) -> (B, L, D). For tests.
    """
    batch, length, width = b.shape
    cols = lambda t: t.permute(0, 2, 1).reshape(batch * width, length)  # noqa: E731
    a_, b_, y_ = cols(a), cols(b), cols(y)
    c = b_.clone()
    c[:, 0] += a_[:, 0] * h0.reshape(batch * width)
    eye = torch.eye(length, dtype=b.dtype, device=b.device)
    R = eye - torch.diag_embed(a_[:, 1:], offset=-1)
    lhs = R.transpose(1, 2) @ R + damping * eye
    rhs = (R.transpose(1, 2) @ c.unsqueeze(-1)).squeeze(-1) + damping * y_
    h = torch.linalg.solve(lhs, rhs)
    return h.reshape(batch, width, length).permute(0, 2, 1)


# ----------------------------------------------------------------------------------------------
# The solver


@dataclass
class _Spec:
    cell: torch.nn.Module
    kind: str  # "diag" | "full": the Jacobian used in the forward iterations
    backward: str  # "diag" | "full": the Jacobian used in the adjoint
    max_iter: int
    tol: float
    rtol: float
    damping: float
    init: object
    info: dict = field(default_factory=dict)


def _shift(h: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """h_prev_t = h_{t-1}: (B, L, D), (B, D) -> (B, L, D)."""
    return torch.cat([h0.unsqueeze(1), h[:, :-1]], dim=1)


def _initial_guess(cell, x: torch.Tensor, h0: torch.Tensor, init) -> torch.Tensor:
    shape = (x.shape[0], x.shape[1], h0.shape[1])
    if isinstance(init, torch.Tensor):
        if tuple(init.shape) != shape:
            raise ValueError(f"newton_solve: an init tensor must be (B, L, D) = {shape}, got {tuple(init.shape)}")
        return init.to(h0.dtype)
    if init == "zeros":
        return h0.new_zeros(shape)
    return cell(h0.new_zeros(shape), x)  # "input": h_t = f(0, x_t)


def _row_blocks(rows: int, width: int, dtype: torch.dtype, device: torch.device) -> list[slice]:
    """Blocks of the B * L rows on which the solver evaluates the cell. On a CPU about CELL_BLOCK_BYTES
    of state each, so that the cell's ~20 elementwise temporaries stay in cache (on a whole (B, L, D)
    tensor each of them is a pass through main memory); f at (h_{t-1}, x_t) depends on that row only."""
    if device.type != "cpu":
        return [slice(0, rows)]
    step = max(1, CELL_BLOCK_BYTES // (width * dtype.itemsize))
    return [slice(start, min(start + step, rows)) for start in range(0, rows, step)]


class _Workspace:
    """Buffers shared by the iterations of one solve: h_prev (B, L, D) with h_prev_1 = h0, its rows
    view (B * L, D) with that of x, and the row blocks the cell is evaluated on."""

    def __init__(self, x: torch.Tensor, h0: torch.Tensor):
        batch, length, width = x.shape[0], x.shape[1], h0.shape[1]
        self.h0 = h0
        self.h_prev = torch.empty(batch, length, width, dtype=h0.dtype, device=h0.device)
        self.h_prev[:, 0] = h0
        self.prev_rows = self.h_prev.view(batch * length, width)
        self.x = x
        self.x_rows = x.reshape(batch * length, x.shape[2])
        self.blocks = _row_blocks(batch * length, width, h0.dtype, h0.device)

    def shift(self, h: torch.Tensor) -> torch.Tensor:
        """h_prev_t = h_{t-1} (h_prev_1 = h0) written into the buffer: (B, L, D) -> (B, L, D)."""
        self.h_prev[:, 1:] = h[:, :-1]
        return self.h_prev

    def linearize_diag(self, cell, h: torch.Tensor, with_offset: bool = True):
        """J_t = diag df/dh(h_{t-1}, x_t) and offset_t = f(h_{t-1}, x_t) - J_t h_{t-1} (or None), block by block."""
        self.shift(h)
        J = torch.empty_like(self.h_prev)
        offset = torch.empty_like(self.h_prev) if with_offset else None
        for rows in self.blocks:
            prev = self.prev_rows[rows]
            value, jac = _value_and_jacobian(cell, prev, self.x_rows[rows], "diag")
            J.view_as(self.prev_rows)[rows] = jac
            if with_offset:
                torch.addcmul(value, jac, prev, value=-1, out=offset.view_as(self.prev_rows)[rows])
        return J, offset

    def residual(self, cell, h: torch.Tensor) -> float:
        """max_t |h_t - f(h_{t-1}, x_t)|, block by block."""
        self.shift(h)
        h_rows = h.reshape(self.prev_rows.shape)
        peaks = [(h_rows[rows] - cell(self.prev_rows[rows], self.x_rows[rows])).abs_().amax() for rows in self.blocks]
        return torch.stack(peaks).amax().item()


def _newton_step(spec: _Spec, h: torch.Tensor, work: _Workspace) -> torch.Tensor:
    if spec.kind == "diag":
        J, offset = work.linearize_diag(spec.cell, h)
        if spec.damping > 0:
            return damped_step(J, offset, h, work.h0, spec.damping)
        return linear_scan(J, offset, work.h0)
    h_prev = work.shift(h)
    value, J = _value_and_jacobian(spec.cell, h_prev, work.x, spec.kind)
    return _block_scan(J, value - _block_matvec(J, h_prev), work.h0)


def _excess(h_new: torch.Tensor, h: torch.Tensor, diff: torch.Tensor, tol: float, rtol: float) -> float:
    """A number that is <= tol exactly when max(|h_new - h| - rtol |h_new|) <= tol, and not finite when
    that is not (an iterate with NaN/inf). Decided by max |h_new - h| alone where it can be (it is an
    upper bound, and above 2 (tol + rtol max |h_new|) the criterion fails): two reductions instead of
    five elementwise passes, for every iteration but those near the tolerance."""
    low, high = torch.aminmax(torch.sub(h_new, h, out=diff))
    bound = max(-low.item(), high.item())
    if not math.isfinite(bound) or bound <= tol:
        return bound
    low, high = torch.aminmax(h_new)
    if bound > 2 * (tol + rtol * max(-low.item(), high.item())):
        return bound
    return diff.abs_().sub_(h_new.abs(), alpha=rtol).amax().item()


def _solve(spec: _Spec, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The iterations, the fallback and the info dict (no autograd)."""
    length = x.shape[1]
    info = {"iterations": 0, "residual": 0.0, "converged": True, "fallback": False, "reason": "empty sequence"}
    if length == 0:
        return h0.new_zeros(h0.shape[0], 0, h0.shape[1]), info
    limit = spec.max_iter if spec.damping > 0 else min(spec.max_iter, length)
    h = _initial_guess(spec.cell, x, h0, spec.init)
    work = _Workspace(x, h0)
    diff = torch.empty_like(work.h_prev)
    converged, reason = False, f"not converged in max_iter={spec.max_iter} iterations"
    for k in range(1, limit + 1):
        h_new = _newton_step(spec, h, work)
        excess = _excess(h_new, h, diff, spec.tol, spec.rtol)
        info["iterations"] = k
        if not math.isfinite(excess):
            reason = f"non-finite iterate at iteration {k}"
            break
        h = h_new
        if excess <= spec.tol:
            converged, reason = True, "update below tolerance"
            break
        if k == length and spec.damping == 0:
            converged, reason = True, "L iterations (exact for undamped Newton)"
    if not converged:
        if not (torch.isfinite(x).all() and torch.isfinite(h0).all()):
            raise ValueError("newton_solve: x or h0 contains NaN or inf; check the inputs of the recurrence")
        log.warning("newton_solve: %s; falling back to the sequential rollout (L=%d)", reason, length)
        h = newton_solve_reference(spec.cell, x, h0)
        if not torch.isfinite(h).all():
            raise FloatingPointError(
                "newton_solve: the sequential rollout is not finite either: the recurrence overflows "
                "(NaN/inf or very large cell parameters); lower the learning rate or check the cell")
    info.update(converged=converged, fallback=not converged, reason=reason, residual=work.residual(spec.cell, h))
    return h, info


def _adjoint(J: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """lambda_t = g_t + J_{t+1}^T lambda_{t+1}, lambda_L = g_L: J diagonal (B, L, D) or blocks (B, L, H, Dh, Dh)."""
    if J.dim() == 3:
        return linear_scan(torch.cat([J[:, 1:], torch.zeros_like(J[:, :1])], dim=1), grad, reverse=True)
    Jt = J[:, 1:].transpose(-1, -2)
    return _block_scan(torch.cat([Jt, torch.zeros_like(J[:, :1])], dim=1), grad, None, reverse=True)


class _ImplicitSolve(torch.autograd.Function):
    """h = solution of h_t = f(h_{t-1}, x_t); backward by the implicit function theorem (module docstring)."""

    @staticmethod
    def forward(ctx, x, h0, spec, *params):
        h, spec.info = _solve(spec, x, h0)
        ctx.spec, ctx.params = spec, params  # parameters are leaves: kept as they are, for autograd.grad
        ctx.save_for_backward(x, h0, h)
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h):
        x, h0, h = ctx.saved_tensors
        h = h.detach()  # the saved output still points at this node
        spec, params = ctx.spec, ctx.params
        with torch.no_grad():
            if spec.backward == "diag":
                J, _ = _Workspace(x, h0).linearize_diag(spec.cell, h, with_offset=False)
            else:
                J = jacobian_blocks(spec.cell, _shift(h, h0), x)
            lam = _adjoint(J, grad_h)
            if not torch.isfinite(lam).all():
                log.warning("newton_solve backward: the adjoint is not finite "
                            "(exploding gradients through the recurrence)")
        needs = ctx.needs_input_grad
        with torch.enable_grad():
            x_ = x.detach().requires_grad_(needs[0])
            h0_ = h0.detach().requires_grad_(needs[1])
            value = spec.cell(_shift(h, h0_), x_)
            wanted = [t for t, need in zip([x_, h0_, *params], needs[:2] + needs[3:]) if need]
            found = iter(torch.autograd.grad(value, wanted, lam, allow_unused=True) if wanted else ())
        grads = [next(found) if need else None for need in needs[:2] + needs[3:]]
        return grads[0], grads[1], None, *grads[2:]


def _check_arguments(x, h0, width: int, jacobian, max_iter, damping, init, backward) -> None:
    """ValueError naming the first argument of `newton_solve` that is out of its range."""
    if x.dim() != 3:
        raise ValueError(f"newton_solve: x must be (B, L, Din), got shape {tuple(x.shape)}")
    if tuple(h0.shape) != (x.shape[0], width):
        raise ValueError(f"newton_solve: h0 must be (B, D) = {(x.shape[0], width)}, got shape {tuple(h0.shape)}")
    if not (x.dtype.is_floating_point and h0.dtype == x.dtype):
        raise ValueError(f"newton_solve: x and h0 must share one real floating dtype, got {x.dtype} and {h0.dtype}")
    if jacobian not in JACOBIANS:
        raise ValueError(f"newton_solve: jacobian={jacobian!r} is not one of {list(JACOBIANS)}")
    if backward not in BACKWARDS:
        raise ValueError(f"newton_solve: backward={backward!r} is not one of {list(BACKWARDS)}")
    if not isinstance(init, torch.Tensor) and init not in INITS:
        raise ValueError(f"newton_solve: init={init!r} is not one of {list(INITS)} or a (B, L, D) tensor")
    if max_iter < 1:
        raise ValueError(f"newton_solve: max_iter={max_iter} must be at least 1")
    if damping < 0:
        raise ValueError(f"newton_solve: damping={damping} must be >= 0")


def _make_spec(cell, x, h0, jacobian, max_iter, tol, damping, init, rtol, backward) -> _Spec:
    """The arguments of `newton_solve`, checked and resolved: the Jacobian of the iterations ("diag" for a
    diagonal cell whatever `jacobian` says), that of the adjoint (backward="auto" decided) and the
    tolerances (None: DEFAULT_TOLERANCES of x's dtype)."""
    width = int(getattr(cell, "d_state", h0.shape[-1]))
    _check_arguments(x, h0, width, jacobian, max_iter, damping, init, backward)
    heads = _num_heads(cell, width)
    diagonal = bool(getattr(cell, "diagonal", False))
    kind = "diag" if diagonal else jacobian
    if damping > 0 and kind == "full":
        raise ValueError("newton_solve: damping (quasi-ELK) is implemented for a diagonal Jacobian; "
                         "use jacobian='diag' or damping=0")
    if diagonal or (backward == "auto" and kind == "full"):
        backward = kind
    elif backward == "auto":
        backward = "full" if width // heads <= FULL_BACKWARD_MAX_STATE else "diag"
    default_tol, default_rtol = DEFAULT_TOLERANCES.get(x.dtype, DEFAULT_TOLERANCES[torch.float32])
    return _Spec(cell, kind, backward, int(max_iter), default_tol if tol is None else float(tol),
                 default_rtol if rtol is None else float(rtol), float(damping), init)


def newton_solve(
    cell: torch.nn.Module,
    x: torch.Tensor,
    h0: torch.Tensor,
    jacobian: str = "diag",
    max_iter: int = 50,
    tol: float | None = None,
    damping: float = 0.0,
    init: str | torch.Tensor = "zeros",
    *,
    rtol: float | None = None,
    backward: str = "auto",
) -> tuple[torch.Tensor, dict]:
    """Solve h_t = f(h_{t-1}, x_t), t = 1 .. L, for all t at once: (B, L, Din), (B, D) -> ((B, L, D), info).

    jacobian: "full" (DEER, exact Newton) or "diag" (quasi-DEER; exact Newton for diagonal cells).
    max_iter: the most Newton steps (undamped: also at most L, which is exact).
    tol, rtol: stop when |h_new - h| <= tol + rtol |h_new| everywhere; None: DEFAULT_TOLERANCES of
        x's dtype (float32: 1e-5 and 1e-4; float64: 1e-10 and 1e-10).
    damping: the Levenberg-Marquardt lambda of quasi-ELK (0: plain Newton); needs a diagonal Jacobian.
    init: "zeros" (h = 0), "input" (h_t = f(0, x_t)) or a (B, L, D) tensor: the first iterate.
    backward: the Jacobian of the adjoint for a dense cell solved with jacobian="diag": "auto"
        (the full one when the head size <= FULL_BACKWARD_MAX_STATE), "full" or "diag" (approximate).
    Returns h and info (iterations, residual, converged, fallback, reason); see the module docstring.
    """
    spec = _make_spec(cell, x, h0, jacobian, max_iter, tol, damping, init, rtol, backward)
    params = [p for p in cell.parameters() if p.requires_grad]
    if torch.is_grad_enabled() and (x.requires_grad or h0.requires_grad or params):
        h = _ImplicitSolve.apply(x, h0, spec, *params)
        return h, spec.info
    with torch.no_grad():
        return _solve(spec, x, h0)
