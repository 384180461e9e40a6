"""The selective scan of Mamba (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective
State Spaces"): a diagonal linear recurrence whose step size delta_t and input / output maps B_t, C_t
depend on the input, discretized as Abar_t = exp(delta_t A) with the input term delta_t B_t u_t.

    selective_scan(u, delta, A, B, C, D=None, z=None, initial_state=None, return_state=False)
        the fast path: chunked over L, custom backward that recomputes each chunk's states
    selective_scan_reference(u, delta, A, B, C, D=None, z=None, initial_state=None, return_state=False)
        the plain loop over t it is tested against (the definition)

Shapes: u, delta (Bt, L, Dm) real, delta > 0 (already softplus-ed); A (Dm, N) real, negative;
B, C (Bt, L, N), shared by the Dm channels (Mamba-1); D (Dm,) or None; z (Bt, L, Dm) or None;
initial_state (Bt, Dm, N) or None (zero). For t = 0 .. L-1, per channel d and state n:

    Abar_t[d, n] = exp(delta_t[d] A[d, n])
    h_t[d, n]    = Abar_t[d, n] h_{t-1}[d, n] + delta_t[d] B_t[n] u_t[d],      h_{-1} = initial_state
    y_t[d]       = sum_n C_t[n] h_t[d, n] + D[d] u_t[d]
    y_t[d]      *= silu(z_t[d])                                               (when z is given)

-> y (Bt, L, Dm), or (y, h_{L-1}) with return_state=True, h: (Bt, Dm, N) the state after the last step.

Precision: the state is computed and accumulated in float64 when any input is float64, else in
float32 (also for bfloat16 / float16 inputs, e.g. under autocast, which is switched off inside);
y comes back in the dtype of u, the final state in the computation dtype (as in core/delta_rule.py),
gradients in the dtype of their input.

The fast path (`_SelectiveScan`) never holds a (Bt, L, Dm, N) tensor. It walks the sequence in chunks
of T steps (`_chunk_length`, or chunk_size=) and keeps for backward only the inputs and the state at
the start of every chunk, (n_chunks, Bt, Dm, N). The recurrence itself is a loop of steps, each a few
in-place operations on one step's (Bt, N, Dm) state slab (Abar_t, then h_t, then C_t h_t), so that a
step's working set stays in cache; what does not depend on the state (delta u, the D term, the gate,
contractions over a chunk's stored states or adjoints, writing the gradients) is done a chunk at a time.
Backward walks the chunks from the last: it recomputes the chunk's T states and Abar's from its start
state into (T, Bt, N, Dm) buffers reused from chunk to chunk, and runs the adjoint recurrence

    g_t = C_t[n] dy'_t[d] + Abar_{t+1} g_{t+1},      dy' = dL/dy'_t for the pre-gate y' (dy silu(z)),
    g_{L-1} = C_{L-1}[n] dy'_{L-1}[d] + dL/dh_{L-1}   (a chunk's last step takes Abar_{t+1} g_{t+1} from the next)

from which dL/d(delta_t B_t u_t) = g_t, dL/dAbar_t = g_t h_{t-1}, dL/dh_{-1} = Abar_0 g_0, then by the
chain rule (with X = g_t h_{t-1} Abar_t):
    d delta_t[d] = sum_n g B_t[n] u_t[d] + sum_n X A[d, n],     dA[d, n] = sum_{b, t} X delta_t[d],
    du_t[d] = sum_n g B_t[n] delta_t[d] + D[d] dy'_t[d],        dB_t[n] = sum_d g delta_t[d] u_t[d],
    dC_t[n] = sum_d dy'_t[d] h_t[d, n],                         dD[d] = sum_{b, t} dy'_t[d] u_t[d],
    dz_t = dy_t y_pre_t silu'(z_t),   silu'(z) = sigmoid(z) (1 + z (1 - sigmoid(z))).
Every number is a product of the loop's own factors (no log-space cumulative sums, no division), so
the fast path agrees with the loop to rounding, also for strongly decaying channels.
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from ssmbench import kernels
from ssmbench.core.precision import compute_dtype, no_autocast

CHUNK_BYTES = 16 * 2**20  # the largest (T, Bt, N, Dm) work buffer `_chunk_length` picks
MIN_CHUNK = 16  # shorter chunks spend more on per-chunk overhead than they save in memory


def _chunk_length(batch: int, length: int, width: int, state: int, itemsize: int) -> int:
    """Steps per chunk. Backward holds the chunk start states, L / T of (Bt, Dm, N), and three work
    buffers of T steps (states, Abar, adjoint): T ~ sqrt(L / 3) minimizes the sum. At least MIN_CHUNK
    steps, and no buffer above CHUNK_BYTES (when one step alone exceeds it, T = 1)."""
    cap = max(1, CHUNK_BYTES // max(1, batch * width * state * itemsize))
    return max(1, min(cap, max(MIN_CHUNK, math.isqrt(max(1, length // 3))), length))


def _compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """`precision.compute_dtype` of the inputs' dtypes."""
    return compute_dtype(*(t.dtype for t in tensors if t is not None))


def _check(name: str, u, delta, A, B, C, D, z, initial_state) -> None:
    """Raise a one-line ValueError naming the first argument whose shape, dtype or device is wrong."""
    def shape(t: torch.Tensor) -> tuple[int, ...]:
        return tuple(t.shape)

    named = {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "z": z, "initial_state": initial_state}
    for key, t in named.items():
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name}: {key} must be a torch.Tensor, got {type(t).__name__}")
        if not t.dtype.is_floating_point:
            raise ValueError(f"{name}: {key} must be a real floating-point tensor, got {t.dtype}")
        if t.device != u.device:
            raise ValueError(f"{name}: {key} is on {t.device} but u is on {u.device}; put all inputs on one device")
    if u.dim() != 3:
        raise ValueError(f"{name}: u must be (Bt, L, Dm), got shape {shape(u)}")
    batch, length, width = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"{name}: delta must be (Bt, L, Dm) = {shape(u)} like u, got shape {shape(delta)}")
    if A.dim() != 2 or A.shape[0] != width:
        raise ValueError(f"{name}: A must be (Dm, N) with Dm = {width}, got shape {shape(A)}")
    state = A.shape[1]
    for key, t in (("B", B), ("C", C)):
        if t.shape != (batch, length, state):
            raise ValueError(f"{name}: {key} must be (Bt, L, N) = {(batch, length, state)}, got shape {shape(t)}")
    if D is not None and D.shape != (width,):
        raise ValueError(f"{name}: D must be (Dm,) = {(width,)}, got shape {shape(D)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"{name}: z must be (Bt, L, Dm) = {shape(u)} like u, got shape {shape(z)}")
    if initial_state is not None and initial_state.shape != (batch, width, state):
        raise ValueError(f"{name}: initial_state must be (Bt, Dm, N) = {(batch, width, state)}, "
                         f"got shape {shape(initial_state)}")


def _time_major(x: torch.Tensor, start: int, stop: int, dtype: torch.dtype) -> torch.Tensor:
    """x[:, start:stop] of a (Bt, L, K) tensor as a contiguous (T, Bt, K) tensor in `dtype`."""
    return x[:, start:stop].transpose(0, 1).to(dtype).contiguous()


class _Chunk:
    """One chunk's inputs, time-major in the computation dtype, and their per-step views.

    dt, u, dtu = delta u: (T, Bt, Dm); B, C: (T, Bt, N). The per-step views are shaped for the
    (Bt, N, Dm) state slabs: dt_b[k], dtu_b[k]: (Bt, 1, Dm) (broadcast over n); B_b[k], C_b[k]:
    (Bt, N, 1) (broadcast over d); C_r[k]: (Bt, 1, N) (the row of the contraction y_t = C_t h_t)."""

    def __init__(self, u, delta, B, C, start, stop, dtype):
        self.dt, self.u = _time_major(delta, start, stop, dtype), _time_major(u, start, stop, dtype)
        self.B, self.C = _time_major(B, start, stop, dtype), _time_major(C, start, stop, dtype)
        self.dtu = self.dt * self.u
        self.dt_b = self.dt[:, :, None, :].unbind(0)
        self.dtu_b = self.dtu[:, :, None, :].unbind(0)
        self.B_b, self.C_b = self.B[..., None].unbind(0), self.C[..., None].unbind(0)
        self.C_r = self.C[:, :, None, :].unbind(0)


def _decay_into(out: torch.Tensor, dt_b: torch.Tensor, At: torch.Tensor) -> torch.Tensor:
    """out = Abar = exp(delta_t A) for one step: dt_b (Bt, 1, Dm), At = A^T (N, Dm) -> out (Bt, N, Dm)."""
    torch.mul(dt_b, At, out=out)
    return out.exp_()


class _SelectiveScan(torch.autograd.Function):
    """(y, h_L) = selective scan of (u, delta, A, B, C, D, z, h0) in chunks of `chunk` steps; see the
    module docstring. Saves the inputs and the chunk start states (n_chunks, Bt, N, Dm) only.

    Inside, a state is a (Bt, N, Dm) slab, state index before channel: the elementwise loops then run
    over Dm contiguous values, and Abar_t = exp(delta_t[None, :] A^T) broadcasts delta_t over n at the
    outer level. h0, h_L and their gradients are (Bt, Dm, N) outside.

    Why a loop of one-step operations: on a CPU they run from cache, and were measured faster than
    doing every operation once per chunk on (T, Bt, N, Dm) buffers (which streams each of them through
    memory) and than linear_scan inside a chunk (2.5x slower than the plain loop for T = 45 steps of
    Bt N Dm = 65536 channels: its two passes cost more than the loop's Python overhead saves)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, h0, chunk):
        ctx.set_materialize_grads(False)
        dtype = _compute_dtype(u, delta, A, B, C, D, z, h0)
        batch, length, width = u.shape
        state = A.shape[1]
        n_chunks = -(-length // chunk)
        opts = {"dtype": dtype, "device": u.device}
        with no_autocast(u.device):
            At = A.t().to(dtype).contiguous()
            D_ = D.to(dtype) if D is not None else None
            starts = torch.empty(n_chunks, batch, state, width, **opts)
            y = torch.empty(batch, length, width, dtype=u.dtype, device=u.device)
            h = torch.zeros(batch, state, width, **opts)  # updated in place: never a view of h0
            if h0 is not None:
                h.copy_(h0.transpose(1, 2))
            decay = torch.empty(batch, state, width, **opts)
            out = torch.empty(min(chunk, length), batch, 1, width, **opts)  # y_t before D and the gate
            out_k = out.unbind(0)  # per-step views made once: indexing a tensor at every step costs time
            for i in range(n_chunks):
                s, e = i * chunk, min(length, (i + 1) * chunk)
                c = _Chunk(u, delta, B, C, s, e, dtype)
                starts[i].copy_(h)
                for dt_b, dtu_b, B_b, C_r, y_k in zip(c.dt_b, c.dtu_b, c.B_b, c.C_r, out_k):
                    h.mul_(_decay_into(decay, dt_b, At)).addcmul_(dtu_b, B_b)
                    torch.bmm(C_r, h, out=y_k)
                yc = out[: e - s, :, 0]
                if D_ is not None:
                    yc.addcmul_(c.u, D_)
                if z is not None:
                    yc.mul_(torch.nn.functional.silu(_time_major(z, s, e, dtype)))
                y[:, s:e] = yc.transpose(0, 1)
            h_last = h.transpose(1, 2).contiguous()
        ctx.chunk = chunk
        ctx.save_for_backward(u, delta, A, B, C, D, z, h0, starts)
        return y, h_last

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dh_last):
        u, delta, A, B, C, D, z, h0, starts = ctx.saved_tensors
        need = ctx.needs_input_grad
        chunk = ctx.chunk
        dtype = starts.dtype
        batch, length, width = u.shape
        state = A.shape[1]
        n_chunks = starts.shape[0]
        opts = {"dtype": dtype, "device": u.device}
        with no_autocast(u.device):
            At = A.t().to(dtype).contiguous()
            D_ = D.to(dtype) if D is not None else None
            du = torch.empty(u.shape, dtype=u.dtype, device=u.device) if need[0] else None
            ddelta = torch.empty(delta.shape, dtype=delta.dtype, device=u.device) if need[1] else None
            dA_sum = torch.zeros(batch, state, width, **opts) if need[2] else None  # summed over Bt at the end
            dB = torch.empty(B.shape, dtype=B.dtype, device=u.device) if need[3] else None
            dC = torch.empty(C.shape, dtype=C.dtype, device=u.device) if need[4] else None
            dD = torch.zeros(width, **opts) if D is not None and need[5] else None
            dz = torch.empty(z.shape, dtype=z.dtype, device=u.device) if z is not None and need[6] else None
            decay_grad = ddelta is not None or dA_sum is not None
            steps = min(chunk, length)
            states = torch.empty(steps + 1, batch, state, width, **opts)  # states[k + 1] = h_k, [0] = start
            decays = torch.empty(steps, batch, state, width, **opts)  # decays[k] = Abar_k
            adjoint = torch.empty(steps, batch, state, width, **opts)  # adjoint[k] = g_k
            h_k, Abar_k, g_k = states.unbind(0), decays.unbind(0), adjoint.unbind(0)
            prod = torch.empty(batch, state, width, **opts)
            # dL/dh at the end of the chunk (from the later steps), then dL/dh_{k-1} = Abar_k g_k
            carry = torch.zeros(batch, state, width, **opts)
            if dh_last is not None:
                carry.copy_(dh_last.transpose(1, 2))
            d_dtu = torch.empty(steps, batch, 1, width, **opts)  # dL/d(delta_t u_t) = sum_n g_t B_t
            d_decay = torch.empty(steps, batch, width, **opts)  # sum_n g_t h_{t-1} Abar_t A
            d_decay_k = d_decay.unbind(0)
            pre = torch.empty(steps, batch, 1, width, **opts) if dz is not None else None  # C_t h_t
            dBc = torch.empty(steps, batch, 1, state, **opts) if dB is not None else None
            dCc = torch.empty(steps, batch, 1, state, **opts) if dC is not None else None
            for i in range(n_chunks - 1, -1, -1):
                s, e = i * chunk, min(length, (i + 1) * chunk)
                T = e - s
                c = _Chunk(u, delta, B, C, s, e, dtype)
                dyc = _time_major(dy, s, e, dtype) if dy is not None else torch.zeros(T, batch, width, **opts)
                if z is not None:
                    zc = _time_major(z, s, e, dtype)
                    sig = torch.sigmoid(zc)
                    dyp = dyc * zc * sig  # dL/dy' for the pre-gate y' = C h + D u
                else:
                    dyp = dyc
                dyp_b = dyp[:, :, None, :].unbind(0)

                # Recompute the chunk's states from its start state.
                states[0].copy_(starts[i])
                for k in range(T):
                    h_next = torch.mul(_decay_into(Abar_k[k], c.dt_b[k], At), h_k[k], out=h_k[k + 1])
                    h_next.addcmul_(c.dtu_b[k], c.B_b[k])
                K = T * batch  # the chunk's (step, batch) pairs, one matrix product each
                hs = states[1 : T + 1].view(K, state, width)
                if dCc is not None:  # dC_t[n] = sum_d dy'_t[d] h_t[n, d]
                    torch.bmm(dyp.view(K, 1, width), hs.transpose(1, 2), out=dCc[:T].view(K, 1, state))
                if pre is not None:  # C_t h_t
                    torch.bmm(c.C.view(K, 1, state), hs, out=pre[:T].view(K, 1, width))

                # The adjoint recurrence, backwards through the chunk, and what each step contributes.
                for k in range(T - 1, -1, -1):
                    # g_t = C_t dy'_t + Abar_{t+1} g_{t+1}, then carry = dL/dh_{t-1} = Abar_t g_t
                    torch.mul(Abar_k[k], torch.addcmul(carry, dyp_b[k], c.C_b[k], out=g_k[k]), out=carry)
                    if decay_grad:
                        torch.mul(carry, h_k[k], out=prod)  # X = g_t Abar_t h_{t-1}
                        if dA_sum is not None:
                            dA_sum.addcmul_(prod, c.dt_b[k])
                        if ddelta is not None:
                            torch.sum(prod.mul_(At), 1, out=d_decay_k[k])

                # The input term delta_t B_t u_t, whose gradient is g_t.
                gs = adjoint[:T].view(K, state, width)
                torch.bmm(c.B.view(K, 1, state), gs, out=d_dtu[:T].view(K, 1, width))
                if dBc is not None:  # dB_t[n] = sum_d g_t[n, d] delta_t[d] u_t[d]
                    torch.bmm(c.dtu.view(K, 1, width), gs.transpose(1, 2), out=dBc[:T].view(K, 1, state))

                # Chunk-level gradients of the inputs.
                dtu_grad = d_dtu[:T, :, 0]
                if dz is not None:
                    yp = pre[:T, :, 0]
                    if D_ is not None:
                        yp.addcmul_(c.u, D_)
                    dz[:, s:e] = (dyc * yp * sig * (1 + zc * (1 - sig))).transpose(0, 1)
                if dD is not None:
                    dD += (dyp * c.u).sum((0, 1))
                if du is not None:
                    duc = dtu_grad * c.dt
                    if D_ is not None:
                        duc.addcmul_(dyp, D_)
                    du[:, s:e] = duc.transpose(0, 1)
                if ddelta is not None:
                    ddelta[:, s:e] = torch.addcmul(d_decay[:T], dtu_grad, c.u).transpose(0, 1)
                if dB is not None:
                    dB[:, s:e] = dBc[:T, :, 0].transpose(0, 1)
                if dC is not None:
                    dC[:, s:e] = dCc[:T, :, 0].transpose(0, 1)
            dA = dA_sum.sum(0).t().to(A.dtype) if dA_sum is not None else None
            dh0 = carry.transpose(1, 2).to(h0.dtype) if h0 is not None and need[7] else None
        return du, ddelta, dA, dB, dC, dD.to(D.dtype) if dD is not None else None, dz, dh0, None


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    return_state: bool = False,
    *,
    chunk_size: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The selective scan (module docstring), chunked over L with a recomputing backward.

        h_t = exp(delta_t A) * h_{t-1} + delta_t B_t u_t,    y_t = (C_t h_t + D u_t) * silu(z_t)

    u, delta (Bt, L, Dm), A (Dm, N), B, C (Bt, L, N), D (Dm,) or None, z (Bt, L, Dm) or None,
    initial_state (Bt, Dm, N) or None -> y (Bt, L, Dm) in the dtype of u, or (y, h_L) with
    return_state=True, h_L (Bt, Dm, N) in the computation dtype (float32, or float64 for float64 input).
    Differentiable in every tensor argument (also through h_L). chunk_size: steps per chunk
    (default `_chunk_length`: ~sqrt(L / 3), at least MIN_CHUNK, buffers of at most CHUNK_BYTES).
    Saved for backward: the inputs and n_chunks = ceil(L / chunk_size) states (Bt, Dm, N).
    Where ssmbench.kernels.use_kernel says so (CUDA tensors of float32, bfloat16 or float16; SSMBENCH_KERNELS),
    the fused Triton kernel ssmbench.kernels.selective_scan computes the same (y, h_L) instead, in its own
    tiles (chunk_size is the torch path's).
    """
    _check("selective_scan", u, delta, A, B, C, D, z, initial_state)
    batch, length, width = u.shape
    if length == 0:
        return selective_scan_reference(u, delta, A, B, C, D, z, initial_state, return_state)
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"selective_scan: chunk_size must be a positive integer, got {chunk_size!r}")
    if u.numel() and A.shape[1] and kernels.use_kernel("selective_scan", (u, delta, A, B, C, D, z, initial_state)):
        from ssmbench.kernels.selective_scan import selective_scan as fused_selective_scan

        y, h_last = fused_selective_scan(u, delta, A, B, C, D, z, initial_state)
        return (y, h_last) if return_state else y
    if chunk_size is None:
        itemsize = torch.finfo(_compute_dtype(u, delta, A, B, C, D, z, initial_state)).bits // 8
        chunk_size = _chunk_length(batch, length, width, A.shape[1], itemsize)
    y, h_last = _SelectiveScan.apply(u, delta, A, B, C, D, z, initial_state, chunk_size)
    return (y, h_last) if return_state else y


def selective_scan_reference(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    return_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The plain loop over t = 0 .. L-1 (the definition; autograd differentiates through it):

        h_t = exp(delta_t[:, :, None] A) * h_{t-1} + (delta_t u_t)[:, :, None] B_t[:, None, :]
        y_t = sum_n C_t[:, None, n] h_t[:, :, n] + D u_t;     y = y * silu(z)

    u, delta (Bt, L, Dm), A (Dm, N), B, C (Bt, L, N), D (Dm,), z (Bt, L, Dm), initial_state (Bt, Dm, N)
    -> y (Bt, L, Dm) in the dtype of u, or (y, h_L) with return_state=True, h_L (Bt, Dm, N) in the
    computation dtype. For testing selective_scan, not for speed.
    """
    _check("selective_scan_reference", u, delta, A, B, C, D, z, initial_state)
    dtype = _compute_dtype(u, delta, A, B, C, D, z, initial_state)
    batch, length, width = u.shape
    with no_autocast(u.device):
        u_, dt, A_, B_, C_ = (t.to(dtype) for t in (u, delta, A, B, C))
        h = u_.new_zeros(batch, width, A.shape[1]) if initial_state is None else initial_state.to(dtype)
        D_ = D.to(dtype) if D is not None else None
        ys = []
        # unbind (not x[:, t]): its backward stacks the per-step gradients once instead of
        # scattering each into a zero tensor of the whole sequence
        for u_t, dt_t, B_t, C_t in zip(u_.unbind(1), dt.unbind(1), B_.unbind(1), C_.unbind(1)):
            h = torch.exp(dt_t[:, :, None] * A_) * h + (dt_t * u_t)[:, :, None] * B_t[:, None, :]
            y_t = (h * C_t[:, None, :]).sum(-1)
            if D_ is not None:
                y_t = y_t + D_ * u_t
            ys.append(y_t)
        y = torch.stack(ys, dim=1) if length else u_.new_zeros(batch, 0, width)
        if z is not None:
            y = y * torch.nn.functional.silu(z.to(dtype))
        y = y.to(u.dtype)
    return (y, h) if return_state else y
