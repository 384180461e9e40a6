"""A fused Triton selective scan (Mamba-1; core.selective_scan.selective_scan), forward and backward.

    selective_scan(u, delta, A, B, C, D=None, z=None, initial_state=None, block_t=None, block_d=None)
        -> (y, h_last)

Shapes as in core.selective_scan: u, delta, z: (Bt, L, Dm); A: (Dm, N); B, C: (Bt, L, N); D: (Dm,);
initial_state: (Bt, Dm, N). Any of float32, bfloat16, float16 (each tensor its own), float32 arithmetic;
y (Bt, L, Dm) in u's dtype, h_last (Bt, Dm, N) in float32. The equations, per channel d and state n:
    Abar_t = exp(delta_t[d] A[d, n]),      h_t = Abar_t h_{t-1} + delta_t[d] B_t[n] u_t[d],   h_{-1} = h0
    y_t[d] = (sum_n C_t[n] h_t[d, n] + D[d] u_t[d]) * silu(z_t[d])
Backward (core.selective_scan's docstring derives it): with dy' = dy silu(z) the gradient of the pre-gate y',
    g_t = C_t[n] dy'_t[d] + Abar_{t+1} g_{t+1},   g_{L-1} = C_{L-1} dy'_{L-1} + dL/dh_last,
    X_t = g_t Abar_t h_{t-1},                     dL/dh0 = Abar_0 g_0,
    ddelta_t = sum_n g_t B_t u_t + sum_n X_t A,   du_t = sum_n g_t B_t delta_t + D dy'_t,
    dA = sum_{b,t} X_t delta_t,   dB_t = sum_d g_t delta_t u_t,   dC_t = sum_d dy'_t h_t,
    dD = sum_{b,t} dy'_t u_t,     dz_t = dy_t y'_t silu'(z_t).

Memory. Nothing of size (Bt, L, Dm, N) is ever written. Each program owns one batch row and BLOCK_D channels
with all N states, and walks the sequence in tiles of BLOCK_T steps; a tile's (BLOCK_T, BLOCK_D, N) states
come from tl.associative_scan over the pairs (Abar_t, delta_t B_t u_t), finished by the state entering the
tile (h = P * carry + S), and are contracted with C_t at once. Forward keeps the state at the start of every
tile, (n_tiles, Bt, Dm, N) in float32 (1 / BLOCK_T of the states), for backward, which walks the tiles from
the last: it recomputes a tile's states from its start state and runs the adjoint as a scan too. The
adjoint runs against time, and Triton's associative_scan(reverse=True) is not trusted with a
non-commutative combine (triton-lang/triton#4362), so backward loads the adjoint's inputs in descending time
order and scans forward; the recomputed h_{t-1} reach that order through a per-program scratch tile
(BLOCK_T, BLOCK_D, N), written in ascending and read in descending order: Bt * Dm * N * BLOCK_T floats
in all, reused by every tile. dB and dC sum over channels, which several programs own: each program writes
its block's partial sums, (Dm / BLOCK_D, Bt, L, N), added in torch (deterministic); dA and dD likewise
per batch row, (Bt, Dm, N) and (Bt, Dm). du, ddelta and dz are written in their inputs' dtypes (computed in
float32, rounded once at the store), so bf16 inputs cost no float32 copies of them.

CUDA tensors run the compiled kernels; CPU tensors run them in Triton's interpreter (numpy; for tests),
built from the same functions as ssmbench.kernels.linear_scan explains (triton.language builtins only).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction

from ssmbench.kernels import KERNEL_DTYPES, launch, tile

# (steps per tile, channels per program); all N states of a channel are in the program (N padded to a power of
# two). The interpreter spends Python time on every element of a tile: small tiles there. The CUDA tile is not
# yet timed on a GPU (issue 17); compiled for sm_90 with _warps' choice it needs 80 (forward) and 182 (backward)
# registers per thread at N = 16 and spills nothing, where backward spills at 16 x 32 and needs 254 at 32 x 16.
BLOCKS = {"cuda": (16, 16), "cpu": (4, 4)}
DTYPES = KERNEL_DTYPES["selective_scan"]


def _warps(block_t: int, block_d: int, block_n: int) -> int:
    """Warps per program: one per 512 elements of a (BLOCK_T, BLOCK_D, BLOCK_N) tile, 1 to 8 (16 per thread)."""
    return min(8, max(1, block_t * block_d * block_n // 512))


def _add(x, y):
    return x + y


def _compose(a1, b1, a2, b2):
    """(a1, b1) then (a2, b2): h -> a2 (a1 h + b1) + b2."""
    return a2 * a1, a2 * b1 + b2


def _forward(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, h0_ptr, y_ptr, starts_ptr, hlast_ptr,
             length, width, n_state,
             su_b, su_t, su_d, sdt_b, sdt_t, sdt_d, sz_b, sz_t, sz_d, sy_b, sy_t, sy_d,
             sB_b, sB_t, sB_n, sC_b, sC_t, sC_n, sA_d, sA_n, s0_b, s0_d, s0_n,
             HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_H0: tl.constexpr,
             BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """y, the tile start states starts (n_tiles, Bt, Dm, N) (contiguous) and h_last (Bt, Dm, N) (contiguous) for
    one batch row (program_id 0) and BLOCK_D channels (program_id 1)."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    states = tl.arange(0, BLOCK_N)
    steps = tl.arange(0, BLOCK_T)
    col_ok = cols < width
    dn_ok = col_ok[:, None] & (states < n_state)[None, :]
    A = tl.load(A_ptr + cols[:, None] * sA_d + states[None, :] * sA_n, mask=dn_ok, other=0.0).to(tl.float32)
    if HAS_D:
        Dd = tl.load(D_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    carry = tl.full([BLOCK_D, BLOCK_N], 0.0, tl.float32)
    if HAS_H0:
        at0 = h0_ptr + row * s0_b + cols[:, None] * s0_d + states[None, :] * s0_n
        carry = tl.load(at0, mask=dn_ok, other=0.0).to(tl.float32)
    at_state = cols[:, None] * n_state + states[None, :]  # (Dm, N) offsets of a contiguous (.., Bt, Dm, N)
    for start in range(0, length, BLOCK_T):
        tile = start // BLOCK_T
        tl.store(starts_ptr + (tile * tl.num_programs(0) + row) * width * n_state + at_state, carry, mask=dn_ok)
        time = start + steps
        ok = (time < length)[:, None] & col_ok[None, :]
        ok_n = (time < length)[:, None] & (states < n_state)[None, :]
        # Steps past the end get delta = 0: Abar = 1, no input; they carry the last state to the tile's last row.
        dt = tl.load(dt_ptr + row * sdt_b + time[:, None] * sdt_t + cols[None, :] * sdt_d, mask=ok, other=0.0)
        u = tl.load(u_ptr + row * su_b + time[:, None] * su_t + cols[None, :] * su_d, mask=ok, other=0.0)
        Bt = tl.load(B_ptr + row * sB_b + time[:, None] * sB_t + states[None, :] * sB_n, mask=ok_n, other=0.0)
        Ct = tl.load(C_ptr + row * sC_b + time[:, None] * sC_t + states[None, :] * sC_n, mask=ok_n, other=0.0)
        dt, u, Bt, Ct = dt.to(tl.float32), u.to(tl.float32), Bt.to(tl.float32), Ct.to(tl.float32)
        decay = tl.exp(dt[:, :, None] * A[None, :, :])
        inp = (dt * u)[:, :, None] * Bt[:, None, :]
        prod, acc = tl.associative_scan((decay, inp), 0, _COMPOSE)
        h = acc + prod * carry[None, :, :]
        y = tl.reduce(h * Ct[:, None, :], 2, _ADD)
        if HAS_D:
            y += Dd[None, :] * u
        if HAS_Z:
            z = tl.load(z_ptr + row * sz_b + time[:, None] * sz_t + cols[None, :] * sz_d, mask=ok, other=0.0)
            z = z.to(tl.float32)
            y *= z / (1.0 + tl.exp(-z))
        tl.store(y_ptr + row * sy_b + time[:, None] * sy_t + cols[None, :] * sy_d, y.to(y_ptr.dtype.element_ty),
                 mask=ok)
        carry = tl.reduce(tl.where(steps[:, None, None] == BLOCK_T - 1, h, 0.0), 0, _ADD)  # h at the last row
    tl.store(hlast_ptr + row * width * n_state + at_state, carry, mask=dn_ok)


def _backward(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, dy_ptr, starts_ptr, dhlast_ptr, scratch_ptr,
              du_ptr, ddt_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dz_ptr, dh0_ptr,
              length, width, n_state,
              su_b, su_t, su_d, sdt_b, sdt_t, sdt_d, sz_b, sz_t, sz_d, sg_b, sg_t, sg_d,
              sB_b, sB_t, sB_n, sC_b, sC_t, sC_n, sA_d, sA_n,
              HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DHLAST: tl.constexpr,
              BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """The gradients (module docstring) for one batch row and BLOCK_D channels, the tiles from the last.
    du, ddelta, dz: (Bt, L, Dm) contiguous, in u's, delta's and z's dtypes; dA: (Bt, Dm, N), dD: (Bt, Dm), dh0:
    (Bt, Dm, N) per batch row; dB, dC: (Dm / BLOCK_D, Bt, L, N) per channel block; these float32 and contiguous.
    dy: strides sg_*."""
    row = tl.program_id(0).to(tl.int64)
    block = tl.program_id(1)
    rows_all = tl.num_programs(0)
    cols = block * BLOCK_D + tl.arange(0, BLOCK_D)
    states = tl.arange(0, BLOCK_N)
    steps = tl.arange(0, BLOCK_T)
    col_ok = cols < width
    n_ok = states < n_state
    dn_ok = col_ok[:, None] & n_ok[None, :]
    A = tl.load(A_ptr + cols[:, None] * sA_d + states[None, :] * sA_n, mask=dn_ok, other=0.0).to(tl.float32)
    Dd = tl.full([BLOCK_D], 0.0, tl.float32)
    if HAS_D:
        Dd = tl.load(D_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    at_state = cols[:, None] * n_state + states[None, :]
    carry = tl.full([BLOCK_D, BLOCK_N], 0.0, tl.float32)  # dL/dh at the end of the tile, from later steps
    if HAS_DHLAST:
        carry = tl.load(dhlast_ptr + row * width * n_state + at_state, mask=dn_ok, other=0.0).to(tl.float32)
    dA = tl.full([BLOCK_D, BLOCK_N], 0.0, tl.float32)
    dD = tl.full([BLOCK_D], 0.0, tl.float32)
    # this program's scratch tile (BLOCK_T, BLOCK_D, BLOCK_N), contiguous: at_scratch + row offset
    at_scratch = (scratch_ptr + (row * tl.num_programs(1) + block) * BLOCK_T * BLOCK_D * BLOCK_N
                  + tl.arange(0, BLOCK_D)[None, :, None] * BLOCK_N + states[None, None, :])
    at_partial = (block * rows_all + row) * length * n_state  # (block, row) of dB, dC
    n_tiles = (length + BLOCK_T - 1) // BLOCK_T
    for back in range(0, n_tiles):
        tile = n_tiles - 1 - back
        start = tile * BLOCK_T
        start_state = tl.load(starts_ptr + (tile * rows_all + row) * width * n_state + at_state, mask=dn_ok,
                              other=0.0)

        # Ascending time: recompute h_{t-1} and h_t; dC, dD, dz.
        time = start + steps
        ok = (time < length)[:, None] & col_ok[None, :]
        ok_n = (time < length)[:, None] & n_ok[None, :]
        dt = tl.load(dt_ptr + row * sdt_b + time[:, None] * sdt_t + cols[None, :] * sdt_d, mask=ok, other=0.0)
        u = tl.load(u_ptr + row * su_b + time[:, None] * su_t + cols[None, :] * su_d, mask=ok, other=0.0)
        Bt = tl.load(B_ptr + row * sB_b + time[:, None] * sB_t + states[None, :] * sB_n, mask=ok_n, other=0.0)
        Ct = tl.load(C_ptr + row * sC_b + time[:, None] * sC_t + states[None, :] * sC_n, mask=ok_n, other=0.0)
        dy = tl.load(dy_ptr + row * sg_b + time[:, None] * sg_t + cols[None, :] * sg_d, mask=ok, other=0.0)
        dt, u, Bt, Ct, dy = dt.to(tl.float32), u.to(tl.float32), Bt.to(tl.float32), Ct.to(tl.float32), dy.to(tl.float32)
        # the pairs of step t - 1 (identity at the tile's first row) give h_{t-1} by a scan
        prev = time - 1
        prev_ok = (steps >= 1)[:, None] & ok
        prev_ok_n = (steps >= 1)[:, None] & ok_n
        dt_p = tl.load(dt_ptr + row * sdt_b + prev[:, None] * sdt_t + cols[None, :] * sdt_d, mask=prev_ok, other=0.0)
        u_p = tl.load(u_ptr + row * su_b + prev[:, None] * su_t + cols[None, :] * su_d, mask=prev_ok, other=0.0)
        B_p = tl.load(B_ptr + row * sB_b + prev[:, None] * sB_t + states[None, :] * sB_n, mask=prev_ok_n, other=0.0)
        dt_p, u_p, B_p = dt_p.to(tl.float32), u_p.to(tl.float32), B_p.to(tl.float32)
        prod, acc = tl.associative_scan((tl.exp(dt_p[:, :, None] * A[None, :, :]),
                                         (dt_p * u_p)[:, :, None] * B_p[:, None, :]), 0, _COMPOSE)
        h_prev = acc + prod * start_state[None, :, :]
        h = tl.exp(dt[:, :, None] * A[None, :, :]) * h_prev + (dt * u)[:, :, None] * Bt[:, None, :]
        dyp = dy
        if HAS_Z:
            z = tl.load(z_ptr + row * sz_b + time[:, None] * sz_t + cols[None, :] * sz_d, mask=ok, other=0.0)
            z = z.to(tl.float32)
            sig = 1.0 / (1.0 + tl.exp(-z))
            dyp = dy * z * sig
            y_pre = tl.reduce(h * Ct[:, None, :], 2, _ADD) + Dd[None, :] * u
            dz = dy * y_pre * sig * (1.0 + z * (1.0 - sig))
            tl.store(dz_ptr + (row * length + time[:, None]) * width + cols[None, :], dz.to(dz_ptr.dtype.element_ty), mask=ok)
        if HAS_D:
            dD += tl.reduce(dyp * u, 0, _ADD)
        dC = tl.reduce(dyp[:, :, None] * h, 1, _ADD)
        tl.store(dC_ptr + at_partial + time[:, None] * n_state + states[None, :], dC, mask=ok_n)
        # h_{t-1} to the scratch tile in descending order, read back in the adjoint's row order below
        tl.store(at_scratch + (BLOCK_T - 1 - steps)[:, None, None] * (BLOCK_D * BLOCK_N), h_prev)
        tl.debug_barrier()

        # Descending time, row r = step start + BLOCK_T - 1 - r: the adjoint g_t = C_t dy'_t + Abar_{t+1} g_{t+1}
        # as a forward scan over the rows, with carry entering the first row; then every gradient of step t.
        time = start + BLOCK_T - 1 - steps
        ok = (time < length)[:, None] & col_ok[None, :]
        ok_n = (time < length)[:, None] & n_ok[None, :]
        h_prev = tl.load(at_scratch + steps[:, None, None] * (BLOCK_D * BLOCK_N))
        tl.debug_barrier()
        dt = tl.load(dt_ptr + row * sdt_b + time[:, None] * sdt_t + cols[None, :] * sdt_d, mask=ok, other=0.0)
        u = tl.load(u_ptr + row * su_b + time[:, None] * su_t + cols[None, :] * su_d, mask=ok, other=0.0)
        Bt = tl.load(B_ptr + row * sB_b + time[:, None] * sB_t + states[None, :] * sB_n, mask=ok_n, other=0.0)
        Ct = tl.load(C_ptr + row * sC_b + time[:, None] * sC_t + states[None, :] * sC_n, mask=ok_n, other=0.0)
        dy = tl.load(dy_ptr + row * sg_b + time[:, None] * sg_t + cols[None, :] * sg_d, mask=ok, other=0.0)
        dt, u, Bt, Ct, dy = dt.to(tl.float32), u.to(tl.float32), Bt.to(tl.float32), Ct.to(tl.float32), dy.to(tl.float32)
        dyp = dy
        if HAS_Z:
            z = tl.load(z_ptr + row * sz_b + time[:, None] * sz_t + cols[None, :] * sz_d, mask=ok, other=0.0)
            z = z.to(tl.float32)
            dyp = dy * z / (1.0 + tl.exp(-z))
        # Abar_{t+1} of the previous row; 1 at the first row (carry) and past the end
        nxt = time + 1
        nxt_ok = (steps >= 1)[:, None] & (nxt < length)[:, None] & col_ok[None, :]
        dt_n = tl.load(dt_ptr + row * sdt_b + nxt[:, None] * sdt_t + cols[None, :] * sdt_d, mask=nxt_ok, other=0.0)
        prod, acc = tl.associative_scan((tl.exp(dt_n.to(tl.float32)[:, :, None] * A[None, :, :]),
                                         dyp[:, :, None] * Ct[:, None, :]), 0, _COMPOSE)
        g = acc + prod * carry[None, :, :]
        decay_g = tl.exp(dt[:, :, None] * A[None, :, :]) * g
        x = decay_g * h_prev
        d_dtu = tl.reduce(g * Bt[:, None, :], 2, _ADD)
        ddt = d_dtu * u + tl.reduce(x * A[None, :, :], 2, _ADD)
        du = d_dtu * dt + Dd[None, :] * dyp
        at = (row * length + time[:, None]) * width + cols[None, :]
        tl.store(ddt_ptr + at, ddt.to(ddt_ptr.dtype.element_ty), mask=ok)
        tl.store(du_ptr + at, du.to(du_ptr.dtype.element_ty), mask=ok)
        dA += tl.reduce(x * dt[:, :, None], 0, _ADD)
        dB = tl.reduce(g * (dt * u)[:, :, None], 1, _ADD)
        tl.store(dB_ptr + at_partial + time[:, None] * n_state + states[None, :], dB, mask=ok_n)
        # dL/dh_{start-1} = Abar_start g_start, the last row
        carry = tl.reduce(tl.where(steps[:, None, None] == BLOCK_T - 1, decay_g, 0.0), 0, _ADD)
    tl.store(dA_ptr + row * width * n_state + at_state, dA, mask=dn_ok)
    tl.store(dh0_ptr + row * width * n_state + at_state, carry, mask=dn_ok)
    if HAS_D:
        tl.store(dD_ptr + row * width + cols, dD, mask=col_ok)


# The combine functions are passed to tl.associative_scan / tl.reduce (compiled: as JIT functions; interpreted:
# called through their .fn); the kernels are launched in the mode that fits the device.
_ADD = JITFunction(_add)
_COMPOSE = JITFunction(_compose)
_KERNELS = {
    (name, interpret): (InterpretedFunction if interpret else JITFunction)(fn)
    for name, fn in (("forward", _forward), ("backward", _backward)) for interpret in (False, True)
}




class _TritonSelectiveScan(torch.autograd.Function):
    """(y, h_last) by _forward, the gradients by _backward; shapes as selective_scan's."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, h0, block_t, block_d):
        ctx.set_materialize_grads(False)
        batch, length, width = u.shape
        n_state = A.shape[1]
        blocks = triton.cdiv(width, block_d)
        f32 = {"dtype": torch.float32, "device": u.device}
        y = torch.empty(batch, length, width, dtype=u.dtype, device=u.device)
        starts = torch.empty(triton.cdiv(length, block_t), batch, width, n_state, **f32)
        h_last = torch.empty(batch, width, n_state, **f32)
        zs = z if z is not None else u  # a valid pointer where a tensor is absent (its flag is off)
        h0s = h0 if h0 is not None else h_last
        launch(_KERNELS, "forward", u.device, (batch, blocks),
            u, delta, A, B, C, D if D is not None else u, zs, h0s, y, starts, h_last, length, width, n_state,
            *u.stride(), *delta.stride(), *zs.stride(), *y.stride(), *B.stride(), *C.stride(), *A.stride(),
            *h0s.stride(), HAS_D=D is not None, HAS_Z=z is not None, HAS_H0=h0 is not None,
            BLOCK_T=block_t, BLOCK_D=block_d, BLOCK_N=triton.next_power_of_2(n_state),
            num_warps=_warps(block_t, block_d, triton.next_power_of_2(n_state)))
        ctx.save_for_backward(u, delta, A, B, C, D, z, h0, starts)
        ctx.blocks = block_t, block_d
        return y, h_last

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dh_last):
        u, delta, A, B, C, D, z, h0, starts = ctx.saved_tensors
        block_t, block_d = ctx.blocks
        batch, length, width = u.shape
        n_state = A.shape[1]
        blocks = triton.cdiv(width, block_d)
        block_n = triton.next_power_of_2(n_state)
        f32 = {"dtype": torch.float32, "device": u.device}
        if dy is None:
            dy = torch.zeros(batch, 1, width, dtype=u.dtype, device=u.device).expand(batch, length, width)
        du, ddelta = u.new_empty(batch, length, width), delta.new_empty(batch, length, width)  # in their dtypes
        dz = z.new_empty(batch, length, width) if z is not None else du
        dA, dh0 = torch.empty(batch, width, n_state, **f32), torch.empty(batch, width, n_state, **f32)
        dD = torch.empty(batch, width, **f32) if D is not None else du
        dB, dC = torch.empty(blocks, batch, length, n_state, **f32), torch.empty(blocks, batch, length, n_state, **f32)
        scratch = torch.empty(batch * blocks * block_t * block_d * block_n, **f32)
        zs = z if z is not None else u
        dh_last = dh_last.contiguous() if dh_last is not None else dh0  # the kernel reads (Bt, Dm, N) contiguous
        launch(_KERNELS, "backward", u.device, (batch, blocks),
            u, delta, A, B, C, D if D is not None else u, zs, dy, starts,
            dh_last, scratch, du, ddelta, dA, dB, dC, dD, dz, dh0,
            length, width, n_state,
            *u.stride(), *delta.stride(), *zs.stride(), *dy.stride(), *B.stride(), *C.stride(), *A.stride(),
            HAS_D=D is not None, HAS_Z=z is not None, HAS_DHLAST=dh_last is not dh0,
            BLOCK_T=block_t, BLOCK_D=block_d, BLOCK_N=block_n, num_warps=_warps(block_t, block_d, block_n))
        return (du, ddelta, dA.sum(0).to(A.dtype), dB.sum(0).to(B.dtype),
                dC.sum(0).to(C.dtype), dD.sum(0).to(D.dtype) if D is not None else None,
                dz if z is not None else None, dh0.to(h0.dtype) if h0 is not None else None, None, None)


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: torch.Tensor | None = None, z: torch.Tensor | None = None,
                   initial_state: torch.Tensor | None = None, block_t: int | None = None,
                   block_d: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The selective scan (module docstring) by the fused kernels -> (y (Bt, L, Dm) in u's dtype,
    h_last (Bt, Dm, N) float32); differentiable in every tensor (also through h_last).

    u, delta, z (Bt, L, Dm), A (Dm, N), B, C (Bt, L, N), D (Dm,), initial_state (Bt, Dm, N): dtypes of DTYPES,
    one device (CUDA: compiled, CPU: Triton's interpreter), L >= 1; core.selective_scan.selective_scan checks
    the shapes and calls this where ssmbench.kernels.use_kernel says so. block_t, block_d: the tile, powers of
    two (None: BLOCKS for the device)."""
    if u.dim() != 3 or u.shape[1] < 1:
        raise ValueError(f"triton selective_scan: u must be (Bt, L, Dm) with L >= 1, got {tuple(u.shape)}")
    wrong = sorted({str(t.dtype) for t in (u, delta, A, B, C, D, z, initial_state) if t is not None} -
                   {str(d) for d in DTYPES})
    if wrong:
        raise ValueError(f"triton selective_scan: takes {', '.join(str(d) for d in DTYPES)} tensors, got {wrong}")
    block_t, block_d = tile("selective_scan", BLOCKS, u.device, block_t=block_t, block_d=block_d)
    if u.numel() == 0 or A.shape[1] == 0:
        raise ValueError(f"triton selective_scan: give Bt, Dm and N >= 1, got u {tuple(u.shape)} and A {tuple(A.shape)}")
    D = D.contiguous() if D is not None else None  # the kernels read D with stride 1
    return _TritonSelectiveScan.apply(u, delta, A, B, C, D, z, initial_state, block_t, block_d)
