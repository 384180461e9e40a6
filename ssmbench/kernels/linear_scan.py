"""Fused Triton kernels for h_t = a_t * h_{t-1} + b_t (core.scan.linear_scan), forward and backward.

    linear_scan(a, b, h0=None, reverse=False, block_t=BLOCK_T, block_d=BLOCK_D)

Shapes: b: (B, L, D); a: (Ba, La, Da) with Ba in {1, B}, La in {1, L}, Da in {1, D} (a (D,) lambda is
(1, 1, D): time-invariant); h0: (B, D) (any strides, e.g. expanded) or None (zero) -> h: (B, L, D) in b's
dtype, which a and h0 share: float32, bfloat16, float16 or complex64. Arithmetic in float32 (complex64:
float32 real and imaginary parts, split in the kernel). Exactly the semantics of core.scan.linear_scan:
    forward:  h_t = a_t * h_{t-1} + b_t,  t = 0 .. L-1,  h_{-1} = h0
    reverse:  h_t = a_t * h_{t+1} + b_t,  t = L-1 .. 0,  h_L  = h0
Backward (PyTorch's convention for complex: gradients are dL/d conj(z)), with "next" the following step
in the scan's direction of travel, s = 0 .. L-1 the step index (s = t forward, L-1-t reverse):
    g_s = dh_s + conj(a_{s+1}) g_{s+1}   (g_{L-1} = dh_{L-1}),   dL/db_s = g_s,
    dL/da_s = g_s conj(h_{s-1}) (h_{-1} = h0, or 0),            dL/dh0 = conj(a_0) g_0;
a gradient of a broadcast a is summed over the broadcast dimensions (over time inside the kernel).

Each program owns one batch row and BLOCK_D channels and walks the sequence in tiles of BLOCK_T steps:
within a tile, tl.associative_scan over the pairs (a, b) with (a1, b1) then (a2, b2) = (a2 a1, a2 b1 + b2)
gives every step's (product of a's, state from zero); the state entering the tile, carried in registers,
finishes it: h = P * carry + S. So memory traffic is one read of a, b and one write of h (backward: one
read of a, h, dh, one write of da, db), with L / BLOCK_T sequential tile steps per program.

CUDA tensors run the compiled kernels; CPU tensors run them in Triton's interpreter (numpy; for tests).
Both are built here from the same Python functions, so one process may use both. For that the kernels
call only triton.language builtins (tl.full, tl.reduce with a combine function here; not tl.zeros or tl.sum,
which triton decorates once, at its import, for one of the two).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction

from ssmbench.kernels import KERNEL_DTYPES, launch, tile

# (steps per tile, channels per program). The interpreter (CPU) spends Python time on every element of a
# tile, masked or not, in tl.associative_scan and tl.reduce: small tiles there.
BLOCKS = {"cuda": (64, 32), "cpu": (8, 8)}
DTYPES = KERNEL_DTYPES["linear_scan"]


def _add(x, y):
    return x + y


def _compose_real(a1, b1, a2, b2):
    """(a1, b1) then (a2, b2): h -> a2 (a1 h + b1) + b2."""
    return a2 * a1, a2 * b1 + b2


def _compose_complex(ar1, ai1, br1, bi1, ar2, ai2, br2, bi2):
    """_compose_real on complex numbers given as (real, imaginary) parts."""
    return (ar2 * ar1 - ai2 * ai1, ar2 * ai1 + ai2 * ar1,
            ar2 * br1 - ai2 * bi1 + br2, ar2 * bi1 + ai2 * br1 + bi2)


def _forward(a_ptr, b_ptr, h0_ptr, h_ptr, length, width,
             sa_b, sa_t, sa_d, sb_b, sb_t, sb_d, s0_b, s0_d, sh_b, sh_t, sh_d,
             HAS_H0: tl.constexpr, REVERSE: tl.constexpr, COMPLEX: tl.constexpr,
             BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    """h for one batch row (program_id 0) and BLOCK_D channels (program_id 1). Strides are in elements of
    the pointers' real type: complex tensors come as view_as_real, the imaginary part at offset 1."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    col_ok = cols < width
    steps = tl.arange(0, BLOCK_T)
    carry_re = tl.full([BLOCK_D], 0.0, tl.float32)
    carry_im = tl.full([BLOCK_D], 0.0, tl.float32)
    if HAS_H0:
        at0 = h0_ptr + row * s0_b + cols * s0_d
        carry_re = tl.load(at0, mask=col_ok, other=0.0).to(tl.float32)
        if COMPLEX:
            carry_im = tl.load(at0 + 1, mask=col_ok, other=0.0).to(tl.float32)
    for start in range(0, length, BLOCK_T):
        step = start + steps
        if REVERSE:
            time = length - 1 - step
        else:
            time = step
        ok = (step < length)[:, None] & col_ok[None, :]
        # Steps past the end get (a, b) = (1, 0): they carry the last state to the tile's last row.
        at_a = a_ptr + row * sa_b + time[:, None] * sa_t + cols[None, :] * sa_d
        at_b = b_ptr + row * sb_b + time[:, None] * sb_t + cols[None, :] * sb_d
        at_h = h_ptr + row * sh_b + time[:, None] * sh_t + cols[None, :] * sh_d
        a_re = tl.load(at_a, mask=ok, other=1.0).to(tl.float32)
        b_re = tl.load(at_b, mask=ok, other=0.0).to(tl.float32)
        if COMPLEX:
            a_im = tl.load(at_a + 1, mask=ok, other=0.0).to(tl.float32)
            b_im = tl.load(at_b + 1, mask=ok, other=0.0).to(tl.float32)
            p_re, p_im, s_re, s_im = tl.associative_scan((a_re, a_im, b_re, b_im), 0, _COMPOSE_COMPLEX)
            h_re = s_re + p_re * carry_re[None, :] - p_im * carry_im[None, :]
            h_im = s_im + p_re * carry_im[None, :] + p_im * carry_re[None, :]
            tl.store(at_h + 1, h_im.to(h_ptr.dtype.element_ty), mask=ok)
            carry_im = tl.reduce(tl.where(steps[:, None] == BLOCK_T - 1, h_im, 0.0), 0, _ADD)
        else:
            p_re, s_re = tl.associative_scan((a_re, b_re), 0, _COMPOSE_REAL)
            h_re = s_re + p_re * carry_re[None, :]
        tl.store(at_h, h_re.to(h_ptr.dtype.element_ty), mask=ok)
        carry_re = tl.reduce(tl.where(steps[:, None] == BLOCK_T - 1, h_re, 0.0), 0, _ADD)


def _backward(a_ptr, h_ptr, h0_ptr, dh_ptr, da_ptr, db_ptr, dh0_ptr, length, width,
              sa_b, sa_t, sa_d, sh_b, sh_t, sh_d, s0_b, s0_d, sg_b, sg_t, sg_d, sda_b, sda_t, sda_d, sd0_b, sd0_d,
              HAS_H0: tl.constexpr, REVERSE: tl.constexpr, COMPLEX: tl.constexpr, A_PER_STEP: tl.constexpr,
              BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    """The adjoint (module docstring) for one batch row and BLOCK_D channels, walking the steps backwards.
    h and db share strides (sh_*); dh: sg_*, h0: s0_*, dh0: sd0_*; da: (B, L, D) (A_PER_STEP) or
    (B, 1, D), the sum over time of dL/da_s (a time-invariant a)."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    col_ok = cols < width
    rows = tl.arange(0, BLOCK_T)
    carry_re = tl.full([BLOCK_D], 0.0, tl.float32)
    carry_im = tl.full([BLOCK_D], 0.0, tl.float32)
    acc_re = tl.full([BLOCK_D], 0.0, tl.float32)
    acc_im = tl.full([BLOCK_D], 0.0, tl.float32)
    h0_re = tl.full([BLOCK_D], 0.0, tl.float32)
    h0_im = tl.full([BLOCK_D], 0.0, tl.float32)
    if HAS_H0:
        at0 = h0_ptr + row * s0_b + cols * s0_d
        h0_re = tl.load(at0, mask=col_ok, other=0.0).to(tl.float32)
        if COMPLEX:
            h0_im = tl.load(at0 + 1, mask=col_ok, other=0.0).to(tl.float32)
    for start in range(0, length, BLOCK_T):
        step = length - 1 - (start + rows)  # descending; negative past the first step
        if REVERSE:
            time, time_next, time_prev = length - 1 - step, length - 2 - step, length - step
        else:
            time, time_next, time_prev = step, step + 1, step - 1
        ok = (step >= 0)[:, None] & col_ok[None, :]
        next_ok = ok & (step + 1 < length)[:, None]
        prev_ok = ok & (step >= 1)[:, None]
        first = (step == 0)[:, None]
        at = row * sh_b + time[:, None] * sh_t + cols[None, :] * sh_d
        at_next = a_ptr + row * sa_b + time_next[:, None] * sa_t + cols[None, :] * sa_d
        at_prev = h_ptr + row * sh_b + time_prev[:, None] * sh_t + cols[None, :] * sh_d
        at_dh = dh_ptr + row * sg_b + time[:, None] * sg_t + cols[None, :] * sg_d
        # Rows past the first step get (conj a_next, dh) = (1, 0): they carry g_0 to the tile's last row.
        c_re = tl.load(at_next, mask=next_ok, other=1.0).to(tl.float32)
        d_re = tl.load(at_dh, mask=ok, other=0.0).to(tl.float32)
        hp_re = tl.where(first, h0_re[None, :], tl.load(at_prev, mask=prev_ok, other=0.0).to(tl.float32))
        if COMPLEX:
            c_im = -tl.load(at_next + 1, mask=next_ok, other=0.0).to(tl.float32)
            d_im = tl.load(at_dh + 1, mask=ok, other=0.0).to(tl.float32)
            hp_im = tl.where(first, h0_im[None, :], tl.load(at_prev + 1, mask=prev_ok, other=0.0).to(tl.float32))
            p_re, p_im, s_re, s_im = tl.associative_scan((c_re, c_im, d_re, d_im), 0, _COMPOSE_COMPLEX)
            g_re = s_re + p_re * carry_re[None, :] - p_im * carry_im[None, :]
            g_im = s_im + p_re * carry_im[None, :] + p_im * carry_re[None, :]
            da_re = g_re * hp_re + g_im * hp_im  # g conj(h_prev)
            da_im = g_im * hp_re - g_re * hp_im
            tl.store(db_ptr + at + 1, g_im.to(db_ptr.dtype.element_ty), mask=ok)
            if A_PER_STEP:
                at_da = da_ptr + row * sda_b + time[:, None] * sda_t + cols[None, :] * sda_d
                tl.store(at_da + 1, da_im.to(da_ptr.dtype.element_ty), mask=ok)
            else:
                acc_im += tl.reduce(tl.where(ok, da_im, 0.0), 0, _ADD)
            carry_im = tl.reduce(tl.where(rows[:, None] == BLOCK_T - 1, g_im, 0.0), 0, _ADD)
        else:
            p_re, s_re = tl.associative_scan((c_re, d_re), 0, _COMPOSE_REAL)
            g_re = s_re + p_re * carry_re[None, :]
            da_re = g_re * hp_re
        tl.store(db_ptr + at, g_re.to(db_ptr.dtype.element_ty), mask=ok)
        if A_PER_STEP:
            at_da = da_ptr + row * sda_b + time[:, None] * sda_t + cols[None, :] * sda_d
            tl.store(at_da, da_re.to(da_ptr.dtype.element_ty), mask=ok)
        else:
            acc_re += tl.reduce(tl.where(ok, da_re, 0.0), 0, _ADD)
        carry_re = tl.reduce(tl.where(rows[:, None] == BLOCK_T - 1, g_re, 0.0), 0, _ADD)
    if not A_PER_STEP:
        at_da = da_ptr + row * sda_b + cols * sda_d
        tl.store(at_da, acc_re.to(da_ptr.dtype.element_ty), mask=col_ok)
        if COMPLEX:
            tl.store(at_da + 1, acc_im.to(da_ptr.dtype.element_ty), mask=col_ok)
    if HAS_H0:  # dL/dh0 = conj(a_0) g_0; g_0 is the carry after the last tile
        if REVERSE:
            first_time = length - 1
        else:
            first_time = 0
        at_a0 = a_ptr + row * sa_b + first_time * sa_t + cols * sa_d
        a0_re = tl.load(at_a0, mask=col_ok, other=0.0).to(tl.float32)
        at_dh0 = dh0_ptr + row * sd0_b + cols * sd0_d
        if COMPLEX:
            a0_im = tl.load(at_a0 + 1, mask=col_ok, other=0.0).to(tl.float32)
            tl.store(at_dh0 + 1, (a0_re * carry_im - a0_im * carry_re).to(dh0_ptr.dtype.element_ty), mask=col_ok)
            tl.store(at_dh0, (a0_re * carry_re + a0_im * carry_im).to(dh0_ptr.dtype.element_ty), mask=col_ok)
        else:
            tl.store(at_dh0, (a0_re * carry_re).to(dh0_ptr.dtype.element_ty), mask=col_ok)


# The combine functions are passed to tl.associative_scan / tl.reduce (compiled: as JIT functions;
# interpreted: called through their .fn), the kernels are launched in the mode that fits the device.
_ADD = JITFunction(_add)
_COMPOSE_REAL = JITFunction(_compose_real)
_COMPOSE_COMPLEX = JITFunction(_compose_complex)
_KERNELS = {
    (name, interpret): (InterpretedFunction if interpret else JITFunction)(fn)
    for name, fn in (("forward", _forward), ("backward", _backward)) for interpret in (False, True)
}



def _real(x: torch.Tensor) -> torch.Tensor:
    """x itself if real; a complex x as its view_as_real (float parts, imaginary at offset 1)."""
    return torch.view_as_real(x.resolve_conj()) if x.is_complex() else x


def _strides(x: torch.Tensor, dims: int) -> tuple[int, ...]:
    """The strides of x's first `dims` dimensions in elements of its real type."""
    return _real(x).stride()[:dims]


class _TritonLinearScan(torch.autograd.Function):
    """h = scan(a, b, h0) by _forward, its gradient by _backward; shapes as linear_scan's."""

    @staticmethod
    def forward(ctx, a, b, h0, reverse, block_t, block_d):
        batch, length, width = b.shape
        a_full = a.expand(batch, length, width)  # stride 0 where a is broadcast
        h = torch.empty((batch, length, width), dtype=b.dtype, device=b.device)
        if h.numel():
            launch(_KERNELS, "forward", b.device, (batch, triton.cdiv(width, block_d)),
                _real(a_full), _real(b), _real(h0 if h0 is not None else h), _real(h), length, width,
                *_strides(a_full, 3), *_strides(b, 3), *(_strides(h0, 2) if h0 is not None else (0, 0)),
                *_strides(h, 3), HAS_H0=h0 is not None, REVERSE=reverse, COMPLEX=b.is_complex(),
                BLOCK_T=block_t, BLOCK_D=block_d)
        ctx.save_for_backward(a, h, h0)
        ctx.config = reverse, block_t, block_d
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx, dh):
        a, h, h0 = ctx.saved_tensors
        reverse, block_t, block_d = ctx.config
        batch, length, width = h.shape
        a_full = a.expand(batch, length, width)
        # dL/da: (B, La, D), in a's dtype where that is a's own shape; in float32 where it is summed after.
        da_shape = (batch, a.shape[1], width)
        da = torch.zeros(da_shape, device=h.device,
                         dtype=h.dtype if da_shape == a.shape else torch.promote_types(h.dtype, torch.float32))
        db = torch.empty_like(h)
        dh0 = None if h0 is None else torch.zeros((batch, width), dtype=h.dtype, device=h.device)
        if h.numel():
            launch(_KERNELS, "backward", h.device, (batch, triton.cdiv(width, block_d)),
                _real(a_full), _real(h), _real(h0 if h0 is not None else h), _real(dh), _real(da), _real(db),
                _real(dh0 if dh0 is not None else h), length, width,
                *_strides(a_full, 3), *_strides(h, 3), *(_strides(h0, 2) if h0 is not None else (0, 0)),
                *_strides(dh, 3), *_strides(da, 3), *(_strides(dh0, 2) if dh0 is not None else (0, 0)),
                HAS_H0=h0 is not None, REVERSE=reverse, COMPLEX=h.is_complex(), A_PER_STEP=a.shape[1] == length,
                BLOCK_T=block_t, BLOCK_D=block_d)
        return da.sum_to_size(a.shape).to(h.dtype), db, dh0, None, None, None


def linear_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None, reverse: bool = False,
                block_t: int | None = None, block_d: int | None = None) -> torch.Tensor:
    """h_t = a_t * h_{t-1} + b_t (reverse: h_t = a_t * h_{t+1} + b_t) by the fused kernels (module docstring).

    a: (Ba, La, Da) with Ba in {1, B}, La in {1, L}, Da in {1, D}; b: (B, L, D); h0: (B, D) or None (zero);
    one dtype of DTYPES for all; one device (CUDA: compiled, CPU: Triton's interpreter) -> h: (B, L, D).
    Differentiable in a, b and h0. block_t, block_d: the tile, powers of two (None: BLOCKS for the device).
    core.scan.linear_scan brings its inputs to this form and calls this where ssmbench.kernels.use_kernel says so.
    """
    if b.dim() != 3 or a.dim() != 3 or any(n not in (1, m) for n, m in zip(a.shape, b.shape)):
        raise ValueError(f"triton linear_scan: give b as (B, L, D) and a as (1 or B, 1 or L, 1 or D), "
                         f"got a {tuple(a.shape)} and b {tuple(b.shape)}")
    if h0 is not None and tuple(h0.shape) != (b.shape[0], b.shape[2]):
        raise ValueError(f"triton linear_scan: h0 must be (B, D) = {(b.shape[0], b.shape[2])}, got {tuple(h0.shape)}")
    dtypes = {t.dtype for t in (a, b, h0) if t is not None}
    if len(dtypes) != 1 or b.dtype not in DTYPES:
        raise ValueError(f"triton linear_scan: a, b and h0 must share one dtype of "
                         f"{', '.join(str(d).removeprefix('torch.') for d in DTYPES)}, got {sorted(map(str, dtypes))}")
    block_t, block_d = tile("linear_scan", BLOCKS, b.device, block_t=block_t, block_d=block_d)
    return _TritonLinearScan.apply(a, b, h0, reverse, block_t, block_d)
