"""Linear recurrences h_t = a_t * h_{t-1} + b_t over the time dimension, in parallel.

    linear_scan(a, b, h0=None, reverse=False)            the fast path (chunked parallel scan)
    linear_scan_reference(a, b, h0=None, reverse=False)  the plain loop it is tested against
    log_linear_scan(log_a, log_b, log_h0=None)           log h for positive a, b, in log space (same chunks)
    log_linear_scan_reference(log_a, log_b, log_h0=None) its plain loop

Shapes: b: (B, L, D); a broadcastable to b (a constant (D,) lambda, (1, 1, D), (B, L, D), ...);
h0: (B, D) (or broadcastable to it), the state before the first step (zero when omitted);
-> h: (B, L, D) in the promoted dtype of a, b and h0 (real or complex).
Forward:  h_t = a_t * h_{t-1} + b_t,  t = 0 .. L-1,  h_{-1} = h0.
Reverse:  h_t = a_t * h_{t+1} + b_t,  t = L-1 .. 0,  h_L  = h0.

The chunked scan splits the time axis into n chunks of C steps. Pass 1 runs the recurrence inside
every chunk at once (a loop of C steps vectorized across chunks), from a zero state, keeping
only each chunk's final state s_k and the product P_k of its a's. The state at the end of chunk
k obeys the same recurrence one level up, E_k = P_k * E_{k-1} + s_k, which is solved by the
same scan (recursively). Pass 2 reruns every chunk from its true initial state E_{k-1}. With
C ~ sqrt(L) that is O(sqrt(L)) sequential steps instead of L. Every number comes from multiply-adds
of the loop's form, on the inputs and on the chunk products P_k (no log-space, no division by
cumulative products): the result differs from the loop's by rounding only, and that stays at
float rounding level on long sequences, also for |a| near 1, signed or complex a (tests/test_scan.py).

The backward pass is the adjoint recurrence, itself a linear scan run in the other direction
with conj(a) (PyTorch's convention: the gradient of a real loss L w.r.t. z is dL/d conj(z)):
    g_t = dh_t + conj(a_{t+1}) * g_{t+1}     (forward scan; g_{L-1} = dh_{L-1})
    dL/db_t = g_t,  dL/da_t = g_t * conj(h_{t-1}),  dL/dh0 = conj(a_0) * g_0
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from ssmbench import kernels

SEQUENTIAL_MAX_LEN = 32  # up to this length the plain loop is the fastest scan


def _chunk_length(length: int, device: torch.device) -> int:
    """Steps per chunk. On a CPU C ~ sqrt(L) (both passes take C steps, the carry scan over L / C
    chunks O(sqrt(L / C)) more; a step's slice of L / C positions stays in cache). On a GPU every
    step is a kernel launch and memory is fast, so short chunks and more recursion levels
    (about 3 C log_C(L) launches) are cheaper."""
    if device.type == "cpu":
        return max(8, math.isqrt(length))
    return 8


def _sequential_into(a: torch.Tensor, b: torch.Tensor, h: torch.Tensor | None, reverse: bool, out: torch.Tensor) -> None:
    """out_t = a_t * out_{t-1/t+1} + b_t step by step; a, b, out: (*, L, D) broadcast, h: (*, D) or None (zero)."""
    length = b.shape[-2]
    for t in range(length - 1, -1, -1) if reverse else range(length):
        if h is None:
            out[..., t, :].copy_(b[..., t, :])
        else:
            torch.addcmul(b[..., t, :], a[..., t, :], h, out=out[..., t, :])
        h = out[..., t, :]


def _scan_into(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None, reverse: bool, out: torch.Tensor) -> None:
    """The chunked scan (module docstring) written into `out`: (B, L, D); a: (Ba, L, Da) broadcast to b."""
    batch, length, width = b.shape
    if length <= SEQUENTIAL_MAX_LEN:
        _sequential_into(a, b, h0, reverse, out)
        return
    chunk = _chunk_length(length, out.device)
    n = length // chunk
    span = n * chunk
    # The chunks cover the first `span` steps of the direction of travel; the rest is a short tail.
    region, tail = (slice(length - span, length), slice(0, length - span)) if reverse else (slice(0, span), slice(span, length))
    ac = a[:, region].reshape(a.shape[0], n, chunk, a.shape[2])
    bc = b[:, region].reshape(batch, n, chunk, width)
    oc = out[:, region].view(batch, n, chunk, width)
    steps = range(chunk - 1, -1, -1) if reverse else range(chunk)

    # Pass 1: each chunk's final state from a zero start, and the product of its a's (in place:
    # fresh buffers at every step would cost more than the arithmetic on a CPU).
    first, *others = steps
    state = torch.empty(batch, n, width, dtype=out.dtype, device=out.device).copy_(bc[:, :, first])
    prod = torch.empty(a.shape[0], n, a.shape[2], dtype=out.dtype, device=out.device).copy_(ac[:, :, first])
    for c in others:
        a_c = ac[:, :, c]
        torch.addcmul(bc[:, :, c], a_c, state, out=state)
        torch.mul(prod, a_c, out=prod)

    # The carry scan one level up: ends[:, k] = prod_k * ends[:, k-1] + state_k (state after chunk k).
    ends = torch.empty(batch, n, width, dtype=out.dtype, device=out.device)
    _scan_into(prod, state, h0, reverse, ends)
    starts = torch.zeros_like(ends) if h0 is None else torch.empty_like(ends)
    if reverse:
        starts[:, :-1] = ends[:, 1:]
        if h0 is not None:
            starts[:, -1] = h0
    else:
        starts[:, 1:] = ends[:, :-1]
        if h0 is not None:
            starts[:, 0] = h0

    # Pass 2: every chunk again, from its true initial state, writing the output.
    state = starts
    for c in steps:
        state = torch.addcmul(bc[:, :, c], ac[:, :, c], state, out=oc[:, :, c])

    if tail.stop > tail.start:
        boundary = out[:, region.start] if reverse else out[:, region.stop - 1]
        _sequential_into(a[:, tail], b[:, tail], boundary, reverse, out[:, tail])


class _LinearScan(torch.autograd.Function):
    """h = scan(a, b, h0) with the adjoint scan as its backward; a: (Ba, L, Da), b: (B, L, D), h0: (B, D)."""

    @staticmethod
    def forward(ctx, a, b, h0, reverse):
        h = torch.empty(b.shape, dtype=b.dtype, device=b.device)
        _scan_into(a, b, h0, reverse, h)
        ctx.reverse = reverse
        ctx.save_for_backward(a, h, h0)
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx, dh):
        a, h, h0 = ctx.saved_tensors
        reverse = ctx.reverse
        batch, length, width = h.shape
        # The adjoint g_t = dh_t + conj(a_next) * g_next runs against the forward direction ("next"
        # is the following forward step). It is solved conjugated, gc = conj(g):
        #     gc_t = conj(dh_t) + a_next * gc_next,
        # in place in one buffer, so that no conjugate view of a or h is ever materialized.
        first, rest, a_next = (0, slice(1, None), slice(None, -1)) if reverse else (-1, slice(None, -1), slice(1, None))
        gc = torch.empty(h.shape, dtype=h.dtype, device=h.device)
        if h.is_complex():
            gc.copy_(dh.conj())
            dh = gc
        else:
            gc[:, first] = dh[:, first]
        _scan_into(a[:, a_next], dh[:, rest], gc[:, first], not reverse, gc[:, rest])

        # dL/da_t = g_t * conj(h_prev) = conj(gc_t * h_prev), h_prev the state that step t multiplies.
        cur, prev, start = (slice(None, -1), slice(1, None), -1) if reverse else (slice(1, None), slice(None, -1), 0)
        grad_a = None
        if ctx.needs_input_grad[0]:
            if a.shape[0] == 1 < batch:  # a shared by the batch: accumulate, never (B, L, D) at once
                grad_a = torch.zeros(1, length, width, dtype=h.dtype, device=h.device)
                for i in range(batch):
                    torch.addcmul(grad_a[0, cur], gc[i, cur], h[i, prev], out=grad_a[0, cur])
                    if h0 is not None:
                        torch.addcmul(grad_a[0, start], gc[i, start], h0[i], out=grad_a[0, start])
            else:
                grad_a = torch.empty_like(gc)
                torch.mul(gc[:, cur], h[:, prev], out=grad_a[:, cur])
                if h0 is None:
                    grad_a[:, start].zero_()
                else:
                    torch.mul(gc[:, start], h0, out=grad_a[:, start])
            grad_a = grad_a.sum_to_size(a.shape).conj_physical_()
        g = gc.conj_physical_()
        grad_h0 = None
        if h0 is not None and ctx.needs_input_grad[2]:
            grad_h0 = g[:, start] * a[:, start].conj()
        return grad_a, g, grad_h0, None


def _broadcasts_to(shape: torch.Size, target: tuple[int, ...]) -> bool:
    """True if a tensor of `shape` broadcasts to exactly `target`."""
    return len(shape) <= len(target) and all(n in (1, m) for n, m in zip(reversed(shape), reversed(target)))


def _promoted(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None, name: str, prefix: str = "") -> torch.dtype:
    """Validate the shapes of a scan's a, b, h0 (named with `prefix`, e.g. log_a); return their promoted dtype."""
    if b.dim() != 3:
        raise ValueError(f"{name}: {prefix}b must be (B, L, D), got shape {tuple(b.shape)}")
    if not _broadcasts_to(a.shape, tuple(b.shape)):
        raise ValueError(f"{name}: {prefix}a of shape {tuple(a.shape)} does not broadcast to {prefix}b of shape "
                         f"{tuple(b.shape)}; give {prefix}a as (D,), (1, 1, D) or (B, L, D)")
    dtype = torch.promote_types(a.dtype, b.dtype)
    if h0 is not None:
        target = (b.shape[0], b.shape[2])
        if not _broadcasts_to(h0.shape, target):
            raise ValueError(f"{name}: {prefix}h0 must be (B, D) = {target}, got shape {tuple(h0.shape)}")
        dtype = torch.promote_types(dtype, h0.dtype)
    return dtype


def _check(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None, name: str) -> torch.dtype:
    """Validate the shapes; return the dtype of h (a, b, h0 promoted)."""
    dtype = _promoted(a, b, h0, name)
    if not (dtype.is_floating_point or dtype.is_complex):
        raise ValueError(f"{name}: a and b must be real or complex floating point, got {a.dtype} and {b.dtype}")
    return dtype


def linear_scan(
    a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None, reverse: bool = False
) -> torch.Tensor:
    """h_t = a_t * h_{t-1} + b_t (reverse: h_t = a_t * h_{t+1} + b_t) by a chunked parallel scan.

    a: broadcastable to b (e.g. (D,), (1, 1, D), (B, L, D)), b: (B, L, D), h0: (B, D) or None (zero)
    -> h: (B, L, D). Real or complex; differentiable in a, b and h0 (gradients of a broadcast a
    or h0 are summed to their shapes). See the module docstring for the algorithm and its adjoint.
    Where ssmbench.kernels.use_kernel says so (CUDA tensors of float32, bfloat16, float16 or complex64;
    SSMBENCH_KERNELS), the fused Triton kernel ssmbench.kernels.linear_scan computes the same h instead.
    """
    dtype = _check(a, b, h0, "linear_scan")
    batch, length, width = b.shape
    a3 = a.to(dtype).reshape((1,) * (3 - a.dim()) + tuple(a.shape))
    b = b.to(dtype)
    if h0 is not None:
        h0 = h0.to(dtype).expand(batch, width)
    if length == 0:
        return b.clone()
    if kernels.use_kernel("linear_scan", (a3, b, h0)):
        from ssmbench.kernels.linear_scan import linear_scan as fused_linear_scan

        return fused_linear_scan(a3, b, h0, reverse)
    return _LinearScan.apply(a3.expand(a3.shape[0], length, a3.shape[2]), b, h0, reverse)


def linear_scan_reference(
    a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None, reverse: bool = False
) -> torch.Tensor:
    """The plain loop for h_t = a_t * h_{t-1} + b_t (reverse: h_t = a_t * h_{t+1} + b_t).

    a: broadcastable to b, b: (B, L, D), h0: (B, D) or None (zero) -> h: (B, L, D); autograd
    differentiates through the loop. For testing linear_scan, not for speed.
    """
    dtype = _check(a, b, h0, "linear_scan_reference")
    batch, length, width = b.shape
    h = torch.zeros(batch, width, dtype=dtype, device=b.device) if h0 is None else h0.to(dtype).expand(batch, width)
    a_steps = a.to(dtype).expand(b.shape).unbind(1)
    b_steps = b.to(dtype).unbind(1)
    order = range(length - 1, -1, -1) if reverse else range(length)
    hs = [None] * length
    for t in order:
        h = a_steps[t] * h + b_steps[t]
        hs[t] = h
    return torch.stack(hs, dim=1) if length else b.to(dtype).clone()


def _log_sequential_into(la: torch.Tensor, lb: torch.Tensor, h: torch.Tensor | None, out: torch.Tensor) -> None:
    """out_t = logaddexp(la_t + out_{t-1}, lb_t) step by step; la, lb, out: (*, L, D) broadcast,
    h: (*, D) or None (-inf)."""
    tmp = None
    for t in range(lb.shape[-2]):
        if h is None:
            out[..., t, :].copy_(lb[..., t, :])
        else:
            tmp = torch.add(la[..., t, :], h, out=tmp)
            torch.logaddexp(tmp, lb[..., t, :], out=out[..., t, :])
        h = out[..., t, :]


def _log_scan_into(la: torch.Tensor, lb: torch.Tensor, lh0: torch.Tensor | None, out: torch.Tensor) -> None:
    """The chunked log-space scan (log_linear_scan) written into `out`: (B, L, D); la: (Ba, L, Da) broadcast to lb."""
    batch, length, width = lb.shape
    if length <= SEQUENTIAL_MAX_LEN:
        _log_sequential_into(la, lb, lh0, out)
        return
    chunk = _chunk_length(length, out.device)
    n = length // chunk
    span = n * chunk
    lac = la[:, :span].reshape(la.shape[0], n, chunk, la.shape[2])
    lbc = lb[:, :span].reshape(batch, n, chunk, width)
    oc = out[:, :span].view(batch, n, chunk, width)

    # Pass 1: each chunk's final log state from h = 0 at its start, and the sum of its log a's.
    state = torch.empty(batch, n, width, dtype=out.dtype, device=out.device).copy_(lbc[:, :, 0])
    total = torch.empty(la.shape[0], n, la.shape[2], dtype=out.dtype, device=out.device).copy_(lac[:, :, 0])
    tmp = torch.empty_like(state)
    for c in range(1, chunk):
        torch.add(lac[:, :, c], state, out=tmp)
        torch.logaddexp(tmp, lbc[:, :, c], out=state)
        total.add_(lac[:, :, c])

    # The carry one level up: log E_k = logaddexp(total_k + log E_{k-1}, state_k), log E_{-1} = lh0.
    ends = torch.empty_like(state)
    _log_scan_into(total, state, lh0, ends)
    starts = torch.empty_like(ends)
    starts[:, 1:] = ends[:, :-1]
    starts[:, 0] = -math.inf if lh0 is None else lh0

    # Pass 2: every chunk again from its true initial state, writing the output.
    state = starts
    for c in range(chunk):
        torch.add(lac[:, :, c], state, out=tmp)
        state = torch.logaddexp(tmp, lbc[:, :, c], out=oc[:, :, c])

    if span < length:
        _log_sequential_into(la[:, span:], lb[:, span:], out[:, span - 1], out[:, span:])


class _LogLinearScan(torch.autograd.Function):
    """log h = log_scan(log a, log b, log h0) with the adjoint scan as its backward;
    la: (Ba, L, Da), lb: (B, L, D), lh0: (B, D) or None."""

    @staticmethod
    def forward(ctx, la, lb, lh0):
        y = torch.empty(lb.shape, dtype=lb.dtype, device=lb.device)
        _log_scan_into(la, lb, lh0, y)
        ctx.save_for_backward(la, lh0, y)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        la, lh0, y = ctx.saved_tensors
        # r_t = a_t h_{t-1} / h_t = exp(log a_t + log h_{t-1} - log h_t), in [0, 1]; r_0 = 0 where h0 = 0.
        # (Recomputed here rather than saved by the forward: on a CPU a fourth (B, L, D) buffer costs more.)
        r = torch.empty_like(y)
        torch.add(la[:, 1:], y[:, :-1], out=r[:, 1:])
        if lh0 is None:
            r[:, 0] = -math.inf
        else:
            torch.add(la[:, 0], lh0, out=r[:, 0])
        r.sub_(y).exp_()
        # h_t = 0 (log b_s = -inf for all s <= t, and h0 = 0): r_t is 0 / 0; a_t multiplies h_{t-1} = 0, so r_t = 0.
        # With a > 0, h_t = 0 only where h_0 = 0 too: a (B, D) check spares the full pass when there is none.
        if torch.isneginf(y[:, 0]).any():
            r.masked_fill_(torch.isneginf(y), 0.0)
        # gamma_t = dL/dlog h_t through every later step: gamma_t = dy_t + r_{t+1} gamma_{t+1} (a linear scan).
        gamma = torch.empty_like(y)
        gamma[:, -1] = dy[:, -1]
        _scan_into(r[:, 1:], dy[:, :-1], gamma[:, -1], True, gamma[:, :-1])
        grad_lh0 = gamma[:, 0] * r[:, 0] if lh0 is not None and ctx.needs_input_grad[2] else None
        # In place (both buffers are this backward's own): dL/dlog a_t = gamma_t r_t into r, then
        # dL/dlog b_t = gamma_t (1 - r_t) into gamma.
        grad_la = r.mul_(gamma)
        grad_lb = gamma.sub_(grad_la)
        return grad_la.sum_to_size(la.shape), grad_lb, grad_lh0


def _check_log(log_a: torch.Tensor, log_b: torch.Tensor, log_h0: torch.Tensor | None, name: str) -> torch.dtype:
    """Validate the shapes of a log-space scan; return the real floating dtype of log h."""
    dtype = _promoted(log_a, log_b, log_h0, name, prefix="log_")
    if not dtype.is_floating_point:
        raise ValueError(f"{name}: log_a, log_b and log_h0 must be real floating point (logs of positive numbers), "
                         f"got {log_a.dtype} and {log_b.dtype}")
    return dtype


def log_linear_scan(
    log_a: torch.Tensor, log_b: torch.Tensor, log_h0: torch.Tensor | None = None
) -> torch.Tensor:
    """log h for h_t = a_t * h_{t-1} + b_t with a, b > 0, in log space by a chunked parallel scan:

        log h_t = logaddexp(log a_t + log h_{t-1}, log b_t),  t = 0 .. L-1,  log h_{-1} = log_h0.

    log_a: broadcastable to log_b (e.g. (D,), (1, 1, D), (B, L, D)), finite (a > 0), log_b: (B, L, D),
    log_h0: (B, D) or broadcastable; None: h0 = 0 -> log h: (B, L, D), real floating point;
    differentiable in all three (gradients of a broadcast log_a or log_h0 are summed to their shapes).
    Entries of log_b and log_h0 may be -inf (b_t = 0, h0 = 0). Where that makes h_t = 0 (log h_t = -inf),
    r_t below is 0 / 0 and is taken as 0: dL/dlog a_t = 0 there (a_t multiplies h_{t-1} = 0), dL/dlog h0 = 0,
    and dL/dlog b_t = dlog h_t (the value b_t / h_t = 1 has for any b_t > 0 after h_{t-1} = 0): finite, not NaN.

    The chunks and carry are those of linear_scan (module docstring) with logaddexp for the
    multiply-add and sums of log a for the chunk products, so every number is a step of the loop's
    form: no cumulative sum of log a over the sequence is ever formed and subtracted again (the
    one-shot form log h = A + logcumsumexp(log b - A), A = cumsum(log a), cancels |A| ~ L |log a|:
    1e-3 relative error at L = 16384, a ~ 0.5 in float32), and products of a that underflow are
    just large negative sums. The error stays at rounding level, independent of L and of a.

    Backward, with r_t = a_t h_{t-1} / h_t = exp(log a_t + log h_{t-1} - log h_t) in [0, 1] (r_0 = 0 if h0 = 0)
    and b_t / h_t = 1 - r_t:
        gamma_t = dlog h_t + r_{t+1} gamma_{t+1}      (linear_scan in reverse; gamma_{L-1} = dlog h_{L-1})
        dL/dlog a_t = gamma_t r_t,  dL/dlog b_t = gamma_t (1 - r_t),  dL/dlog h0 = gamma_0 r_0
    Every factor lies in [0, 1], so nothing overflows; the error of each gradient is at most a few ulps
    of |gamma_t| (absolute: dL/dlog b_t where b_t / h_t is below rounding is a difference of near-equal numbers).
    """
    dtype = _check_log(log_a, log_b, log_h0, "log_linear_scan")
    batch, length, width = log_b.shape
    la = log_a.to(dtype).reshape((1,) * (3 - log_a.dim()) + tuple(log_a.shape))
    la = la.expand(la.shape[0], length, la.shape[2])
    lb = log_b.to(dtype)
    if log_h0 is not None:
        log_h0 = log_h0.to(dtype).expand(batch, width)
    if length == 0:
        return lb.clone()
    return _LogLinearScan.apply(la, lb, log_h0)


def log_linear_scan_reference(
    log_a: torch.Tensor, log_b: torch.Tensor, log_h0: torch.Tensor | None = None
) -> torch.Tensor:
    """The plain loop log h_t = logaddexp(log a_t + log h_{t-1}, log b_t), log h_{-1} = log_h0 (None: -inf).

    log_a: broadcastable to log_b, log_b: (B, L, D), log_h0: (B, D) or None -> log h: (B, L, D);
    autograd differentiates through the loop. For testing log_linear_scan, not for speed.
    """
    dtype = _check_log(log_a, log_b, log_h0, "log_linear_scan_reference")
    batch, length, width = log_b.shape
    if log_h0 is None:
        h = torch.full((batch, width), -math.inf, dtype=dtype, device=log_b.device)
    else:
        h = log_h0.to(dtype).expand(batch, width)
    hs = []
    for a_t, b_t in zip(log_a.to(dtype).expand(log_b.shape).unbind(1), log_b.to(dtype).unbind(1)):
        h = torch.logaddexp(a_t + h, b_t)
        hs.append(h)
    return torch.stack(hs, dim=1) if length else log_b.to(dtype).clone()
