"""A fused Triton Cauchy kernel (core.cauchy.cauchy), forward and backward: S4's Cauchy sums in one launch each.

    cauchy(v, z, w, block_l=None, block_n=None) -> y

    y_j = sum_i v_i / (z_j - w_i):   v (..., N), z (..., L), w (..., N) -> y (..., L), all complex64.

Leading dimensions broadcast as in core (S4 shares the nodes z across every row and w across the 1+r by 1+r
numerators of a channel). Arithmetic in float32 on the real and imaginary parts, split in the kernels:
with a + ib = z_j - w_i,  r_ji = 1 / (z_j - w_i) = (a - ib) / (a^2 + b^2),  conj(r_ji) = (a + ib) / (a^2 + b^2),
accurate to float32 rounding for |z_j - w_i| within about [1.1e-19, 1.8e19], where a^2 + b^2 is a normal float32
(S4's largest node, the image of omega = -1, has |z| ~ 1.6e16: a^2 + b^2 ~ 2.7e32).
Backward (conjugate Wirtinger gradients, PyTorch's convention, as core.cauchy._ChunkedCauchy derives them), with
the incoming gradient g_j of y_j:
    dv_i = sum_j g_j conj(r_ji),   dw_i = conj(v_i) sum_j g_j conj(r_ji)^2,   dz_j = -g_j sum_i conj(v_i) conj(r_ji)^2,
each summed over the leading dimensions its input was broadcast along (in torch, after the kernels).

The Cauchy matrix is never stored. The broadcast batch (...) is flattened to R rows; an input broadcast along a
leading dimension is read with stride 0 there, through a table of its R row offsets (built once per shape and
strides, cached on the device), so no input is copied to the common shape. Three kernels, each one program per
(row, block):
    _forward      (row, BLOCK_L nodes): loops over the poles in blocks of BLOCK_N, accumulates v r in a
                  (BLOCK_L, BLOCK_N) tile, sums it over the poles at the end -> y;
    _grad_poles   (row, BLOCK_N poles): loops over the nodes in blocks of BLOCK_L -> dv and dw (where v or w
                  needs a gradient);
    _grad_nodes   (row, BLOCK_L nodes): loops over the poles -> dz, only where z needs a gradient (S4's nodes,
                  the roots of unity, do not).
Once differentiable: the backward is not itself differentiable (nor is core's chunked torch path's, which works
in place).

CUDA tensors run the compiled kernels; CPU tensors run them in Triton's interpreter (numpy; for tests), built
from the same functions as ssmbench.kernels.linear_scan explains (triton.language builtins only).
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction

from ssmbench.kernels import KERNEL_DTYPES, launch, tile

# (nodes per tile, poles per tile). S4 calls it with N/2 = 32 poles (N = 64) and L + 2 nodes: one tile of poles
# per row. The CUDA tile is a first choice, not yet timed on a GPU (issue 17): compiled for sm_90 with 4 warps it
# needs 85 (forward), 92 (dv, dw) and 64 (dz) registers and no local memory; (64, 32) needs 139, 186 and 128.
# The interpreter runs tl.reduce's combine in Python once per element of a tile (a (1024, 32) tile: seconds per
# program): small tiles there.
BLOCKS = {"cuda": (32, 32), "cpu": (8, 4)}
DTYPES = KERNEL_DTYPES["cauchy"]


def _add(x, y):
    return x + y


def _forward(v_ptr, z_ptr, w_ptr, y_ptr, v_rows, z_rows, w_rows, n_poles, n_nodes, sv, sz, sw,
             BLOCK_L: tl.constexpr, BLOCK_N: tl.constexpr):
    """y (R, L) contiguous for one row (program_id 0) and BLOCK_L nodes (program_id 1). Pointers and strides are
    in float32 elements of the complex tensors' view_as_real (imaginary part at offset 1); *_rows: each row's
    offset (int64)."""
    row = tl.program_id(0)
    nodes = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
    node_ok = nodes < n_nodes
    at_z = z_ptr + tl.load(z_rows + row) + nodes * sz
    z_re = tl.load(at_z, mask=node_ok, other=0.0)
    z_im = tl.load(at_z + 1, mask=node_ok, other=0.0)
    v_row = v_ptr + tl.load(v_rows + row)
    w_row = w_ptr + tl.load(w_rows + row)
    acc_re = tl.full([BLOCK_L, BLOCK_N], 0.0, tl.float32)
    acc_im = tl.full([BLOCK_L, BLOCK_N], 0.0, tl.float32)
    for start in range(0, n_poles, BLOCK_N):
        poles = start + tl.arange(0, BLOCK_N)
        pole_ok = poles < n_poles
        v_re = tl.load(v_row + poles * sv, mask=pole_ok, other=0.0)
        v_im = tl.load(v_row + poles * sv + 1, mask=pole_ok, other=0.0)
        w_re = tl.load(w_row + poles * sw, mask=pole_ok, other=0.0)
        w_im = tl.load(w_row + poles * sw + 1, mask=pole_ok, other=0.0)
        a = z_re[:, None] - w_re[None, :]
        b = z_im[:, None] - w_im[None, :]
        ok = node_ok[:, None] & pole_ok[None, :]
        scale = tl.where(ok, 1.0 / tl.where(ok, a * a + b * b, 1.0), 0.0)  # 0: masked terms vanish
        # v r = (v_re + i v_im)(a - ib) / (a^2 + b^2)
        acc_re += (v_re[None, :] * a + v_im[None, :] * b) * scale
        acc_im += (v_im[None, :] * a - v_re[None, :] * b) * scale
    at_y = y_ptr + row.to(tl.int64) * n_nodes * 2 + nodes * 2
    tl.store(at_y, tl.reduce(acc_re, 1, _ADD), mask=node_ok)
    tl.store(at_y + 1, tl.reduce(acc_im, 1, _ADD), mask=node_ok)


def _grad_poles(v_ptr, z_ptr, w_ptr, g_ptr, dv_ptr, dw_ptr, v_rows, z_rows, w_rows, g_rows, n_poles, n_nodes,
                sv, sz, sw, sg, BLOCK_L: tl.constexpr, BLOCK_N: tl.constexpr):
    """dv and dw, (R, N) contiguous, for one row (program_id 0) and BLOCK_N poles (program_id 1); layout as
    _forward's, g the gradient of y."""
    row = tl.program_id(0)
    poles = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    pole_ok = poles < n_poles
    at_w = w_ptr + tl.load(w_rows + row) + poles * sw
    w_re = tl.load(at_w, mask=pole_ok, other=0.0)
    w_im = tl.load(at_w + 1, mask=pole_ok, other=0.0)
    z_row = z_ptr + tl.load(z_rows + row)
    g_row = g_ptr + tl.load(g_rows + row)
    gc_re = tl.full([BLOCK_L, BLOCK_N], 0.0, tl.float32)  # sum_j g_j conj(r_ji), per tile row
    gc_im = tl.full([BLOCK_L, BLOCK_N], 0.0, tl.float32)
    gc2_re = tl.full([BLOCK_L, BLOCK_N], 0.0, tl.float32)  # sum_j g_j conj(r_ji)^2
    gc2_im = tl.full([BLOCK_L, BLOCK_N], 0.0, tl.float32)
    for start in range(0, n_nodes, BLOCK_L):
        nodes = start + tl.arange(0, BLOCK_L)
        node_ok = nodes < n_nodes
        z_re = tl.load(z_row + nodes * sz, mask=node_ok, other=0.0)
        z_im = tl.load(z_row + nodes * sz + 1, mask=node_ok, other=0.0)
        g_re = tl.load(g_row + nodes * sg, mask=node_ok, other=0.0)
        g_im = tl.load(g_row + nodes * sg + 1, mask=node_ok, other=0.0)
        a = z_re[:, None] - w_re[None, :]
        b = z_im[:, None] - w_im[None, :]
        ok = node_ok[:, None] & pole_ok[None, :]
        scale = tl.where(ok, 1.0 / tl.where(ok, a * a + b * b, 1.0), 0.0)
        c_re = a * scale  # conj(r) = (a + ib) / (a^2 + b^2)
        c_im = b * scale
        t_re = g_re[:, None] * c_re - g_im[:, None] * c_im  # g conj(r)
        t_im = g_re[:, None] * c_im + g_im[:, None] * c_re
        gc_re += t_re
        gc_im += t_im
        gc2_re += t_re * c_re - t_im * c_im  # g conj(r)^2
        gc2_im += t_re * c_im + t_im * c_re
    at_v = v_ptr + tl.load(v_rows + row) + poles * sv
    v_re = tl.load(at_v, mask=pole_ok, other=0.0)
    v_im = tl.load(at_v + 1, mask=pole_ok, other=0.0)
    s_re = tl.reduce(gc2_re, 0, _ADD)
    s_im = tl.reduce(gc2_im, 0, _ADD)
    at_out = row.to(tl.int64) * n_poles * 2 + poles * 2
    tl.store(dv_ptr + at_out, tl.reduce(gc_re, 0, _ADD), mask=pole_ok)
    tl.store(dv_ptr + at_out + 1, tl.reduce(gc_im, 0, _ADD), mask=pole_ok)
    tl.store(dw_ptr + at_out, v_re * s_re + v_im * s_im, mask=pole_ok)  # conj(v) s
    tl.store(dw_ptr + at_out + 1, v_re * s_im - v_im * s_re, mask=pole_ok)


def _grad_nodes(v_ptr, z_ptr, w_ptr, g_ptr, dz_ptr, v_rows, z_rows, w_rows, g_rows, n_poles, n_nodes,
                sv, sz, sw, sg, BLOCK_L: tl.constexpr, BLOCK_N: tl.constexpr):
    """dz, (R, L) contiguous, for one row (program_id 0) and BLOCK_L nodes (program_id 1); layout as _forward's."""
    row = tl.program_id(0)
    nodes = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
    node_ok = nodes < n_nodes
    at_z = z_ptr + tl.load(z_rows + row) + nodes * sz
    z_re = tl.load(at_z, mask=node_ok, other=0.0)
    z_im = tl.load(at_z + 1, mask=node_ok, other=0.0)
    v_row = v_ptr + tl.load(v_rows + row)
    w_row = w_ptr + tl.load(w_rows + row)
    acc_re = tl.full([BLOCK_L, BLOCK_N], 0.0, tl.float32)  # sum_i conj(v_i) conj(r_ji)^2
    acc_im = tl.full([BLOCK_L, BLOCK_N], 0.0, tl.float32)
    for start in range(0, n_poles, BLOCK_N):
        poles = start + tl.arange(0, BLOCK_N)
        pole_ok = poles < n_poles
        v_re = tl.load(v_row + poles * sv, mask=pole_ok, other=0.0)
        v_im = tl.load(v_row + poles * sv + 1, mask=pole_ok, other=0.0)
        w_re = tl.load(w_row + poles * sw, mask=pole_ok, other=0.0)
        w_im = tl.load(w_row + poles * sw + 1, mask=pole_ok, other=0.0)
        a = z_re[:, None] - w_re[None, :]
        b = z_im[:, None] - w_im[None, :]
        ok = node_ok[:, None] & pole_ok[None, :]
        scale = tl.where(ok, 1.0 / tl.where(ok, a * a + b * b, 1.0), 0.0)
        c_re = a * scale
        c_im = b * scale
        c2_re = c_re * c_re - c_im * c_im
        c2_im = 2.0 * c_re * c_im
        acc_re += v_re[None, :] * c2_re + v_im[None, :] * c2_im  # conj(v) conj(r)^2
        acc_im += v_re[None, :] * c2_im - v_im[None, :] * c2_re
    s_re = tl.reduce(acc_re, 1, _ADD)
    s_im = tl.reduce(acc_im, 1, _ADD)
    at_g = g_ptr + tl.load(g_rows + row) + nodes * sg
    g_re = tl.load(at_g, mask=node_ok, other=0.0)
    g_im = tl.load(at_g + 1, mask=node_ok, other=0.0)
    at_dz = dz_ptr + row.to(tl.int64) * n_nodes * 2 + nodes * 2
    tl.store(at_dz, s_im * g_im - g_re * s_re, mask=node_ok)  # -g s
    tl.store(at_dz + 1, -(g_re * s_im + g_im * s_re), mask=node_ok)


# The combine function is passed to tl.reduce (compiled: as a JIT function; interpreted: called through its .fn);
# the kernels are launched in the mode that fits the device.
_ADD = JITFunction(_add)
_KERNELS = {
    (name, interpret): (InterpretedFunction if interpret else JITFunction)(fn)
    for name, fn in (("forward", _forward), ("grad_poles", _grad_poles), ("grad_nodes", _grad_nodes))
    for interpret in (False, True)
}



@functools.lru_cache(maxsize=64)
def _row_offsets(batch: tuple[int, ...], strides: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """The offset of every row of the flattened batch, sum_d index_d * strides[d], as an int64 tensor (R,) on
    `device`: built and copied once per (batch, strides, device)."""
    offsets = torch.zeros((), dtype=torch.int64)
    for size, stride in zip(batch, strides):
        offsets = offsets[..., None] + torch.arange(size, dtype=torch.int64) * stride
    return offsets.reshape(-1).to(device)


def _rows(x: torch.Tensor, batch: torch.Size) -> tuple[torch.Tensor, torch.Tensor, int]:
    """x broadcast to (*batch, n) as (its view_as_real, the row offsets, the stride of its last dimension), in
    float32 elements; stride 0 along the broadcast dimensions, nothing copied (but a conjugate view resolved)."""
    full = torch.view_as_real(x.resolve_conj().expand(*batch, x.shape[-1]))
    strides = full.stride()
    return full, _row_offsets(tuple(batch), strides[:len(batch)], full.device), strides[len(batch)]


class _TritonCauchy(torch.autograd.Function):
    """y = cauchy(v, z, w) by _forward; dv, dw by _grad_poles and dz by _grad_nodes (module docstring)."""

    @staticmethod
    def forward(ctx, v, z, w, block_l, block_n):
        batch = torch.broadcast_shapes(v.shape[:-1], z.shape[:-1], w.shape[:-1])
        n_poles, n_nodes = v.shape[-1], z.shape[-1]
        rows = math.prod(batch)
        y = torch.empty(*batch, n_nodes, dtype=v.dtype, device=v.device)
        if y.numel():
            (vr, v_rows, sv), (zr, z_rows, sz), (wr, w_rows, sw) = (_rows(x, batch) for x in (v, z, w))
            launch(_KERNELS, "forward", v.device, (rows, triton.cdiv(n_nodes, block_l)),
                vr, zr, wr, torch.view_as_real(y), v_rows, z_rows, w_rows, n_poles, n_nodes, sv, sz, sw,
                BLOCK_L=block_l, BLOCK_N=block_n)
        ctx.save_for_backward(v, z, w)
        ctx.config = batch, block_l, block_n
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        v, z, w = ctx.saved_tensors
        batch, block_l, block_n = ctx.config
        need_v, need_z, need_w = ctx.needs_input_grad[:3]
        n_poles, n_nodes = v.shape[-1], z.shape[-1]
        rows = math.prod(batch)
        (vr, v_rows, sv), (zr, z_rows, sz), (wr, w_rows, sw), (gr, g_rows, sg) = (
            _rows(x, batch) for x in (v, z, w, grad))
        common = (v_rows, z_rows, w_rows, g_rows, n_poles, n_nodes, sv, sz, sw, sg)
        nonempty = bool(rows and n_poles and n_nodes)
        new = torch.empty if nonempty else torch.zeros  # a launch writes every entry; else the sums are empty: 0
        dv = dz = dw = None
        if need_v or need_w:
            dv = new(*batch, n_poles, dtype=v.dtype, device=v.device)
            dw = new(*batch, n_poles, dtype=v.dtype, device=v.device)
            if nonempty:
                launch(_KERNELS, "grad_poles", v.device, (rows, triton.cdiv(n_poles, block_n)),
                    vr, zr, wr, gr, torch.view_as_real(dv), torch.view_as_real(dw), *common,
                    BLOCK_L=block_l, BLOCK_N=block_n)
        if need_z:
            dz = new(*batch, n_nodes, dtype=z.dtype, device=z.device)
            if nonempty:
                launch(_KERNELS, "grad_nodes", z.device, (rows, triton.cdiv(n_nodes, block_l)),
                    vr, zr, wr, gr, torch.view_as_real(dz), *common, BLOCK_L=block_l, BLOCK_N=block_n)
        return (dv.sum_to_size(v.shape) if need_v else None, dz.sum_to_size(z.shape) if need_z else None,
                dw.sum_to_size(w.shape) if need_w else None, None, None)


def cauchy(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor, block_l: int | None = None,
           block_n: int | None = None) -> torch.Tensor:
    """y_j = sum_i v_i / (z_j - w_i) by the fused kernels (module docstring): v (..., N), z (..., L), w (..., N),
    leading dimensions broadcast, all complex64 on one device (CUDA: compiled, CPU: Triton's interpreter) ->
    y (..., L) complex64. Differentiable in v, z and w. block_l, block_n: nodes and poles per tile, powers of two
    (None: BLOCKS for the device). core.cauchy.cauchy calls this where ssmbench.kernels.use_kernel says so."""
    if v.dim() < 1 or z.dim() < 1 or w.dim() < 1 or v.shape[-1] != w.shape[-1]:
        raise ValueError(f"triton cauchy: give v (..., N), z (..., L), w (..., N) with one N, got v "
                         f"{tuple(v.shape)}, z {tuple(z.shape)}, w {tuple(w.shape)}")
    wrong = sorted({str(t.dtype).removeprefix("torch.") for t in (v, z, w) if t.dtype not in DTYPES})
    if wrong:
        raise ValueError(f"triton cauchy: takes complex64 tensors, got {', '.join(wrong)}; "
                         f"use ssmbench.core.cauchy.cauchy for other dtypes")
    block_l, block_n = tile("cauchy", BLOCKS, v.device, block_l=block_l, block_n=block_n)
    return _TritonCauchy.apply(v, z, w, block_l, block_n)
