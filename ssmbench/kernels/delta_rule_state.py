"""Fused Triton kernels for the inter-chunk state pass of the chunkwise (gated) delta rule
(core.delta_rule._state_pass), forward and backward.

    delta_rule_state(K, W, U, decay, S0, block_v=None) -> (starts, corrected, S_final)

Shapes: K, W (B, H, N, C, Dk), U (B, H, N, C, Dv), decay (B, H, N) or None (no decay: d_n = 1), S0 (B, H, Dk, Dv)
-> starts (B, H, N, Dk, Dv), corrected (B, H, N, C, Dv), S_final (B, H, Dk, Dv), all in the inputs' one dtype
(float32, bfloat16 or float16); arithmetic in float32, tl.dot with input_precision="ieee" (no TF32), so that
float32 inputs give float32-accurate results. The pass, n = 0 .. N-1, S_0 = S0:
    starts_n = S_n,    U'_n = U_n - W_n S_n,    S_{n+1} = d_n S_n + K_n^T U'_n,    S_final = S_N.
Backward, n = N-1 .. 0, with G_{n+1} = dL/dS_{n+1} carried (G_N = dS_final) and dU'_n = dcorrected_n + K_n G_{n+1}:
    dU_n = dU'_n,    dW_n = -dU'_n S_n^T,    dK_n = U'_n G_{n+1}^T,    dd_n = sum(S_n * G_{n+1}),
    G_n = d_n G_{n+1} - W_n^T dU'_n + dstarts_n,    dS0 = G_0.

The columns of S are independent (U' = U - W S column by column), so each program owns one (b, h) and a block
of BV value columns, keeps its S (Dk, BV) (backward: G) in float32 registers and walks the chunks: one launch
for the whole pass instead of about 4N. dK, dW and dd sum over the value blocks: each block writes its own
partial, summed afterwards in torch (deterministic; nothing to sum where one block covers Dv). Dk, C and the
value block are padded to powers of two (compiled: at least 16, as tl.dot needs) with masked loads (zeros)
and stores; the padding adds zero rows and columns that leave the results unchanged.

CUDA tensors run the compiled kernels; CPU tensors run them in Triton's interpreter (numpy; for tests). Both
are built here from the same Python functions (as in ssmbench.kernels.linear_scan): the kernels call only
triton.language builtins (tl.full, tl.dot, tl.trans, tl.reduce with a combine function here; not tl.zeros or
tl.sum, which triton decorates once, at its import, for one of the two modes).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction

from ssmbench.kernels import KERNEL_DTYPES, launch

# Value columns per program, the most: compiled, S (Dk, 32) and the (C, 32) tiles stay in registers at Dk = 128,
# C = 64 (B=8, H=16, Dv=128: 512 programs); interpreted, one block (fewer programs, each numpy-vectorized).
VALUE_BLOCK = {"cuda": 32, "cpu": 128}
MIN_BLOCK = {"cuda": 16, "cpu": 1}  # tl.dot's smallest compiled operand side; the interpreter takes any
# Compiled: two stages of software pipelining over the chunk loop (prefetching the next chunk's K, W, U); Triton's
# default of three needs 160 KiB (forward) and 200 KiB (backward) of shared memory at Dk = 128, C = 64, float32,
# more than GPUs below the H100 class have; two need 88 and 112 KiB (triton 3.9, compiled for sm_90; triton 3.6:
# 88 / 120 KiB, bf16 100 / 136 KiB), still more than GPUs of ~100 KiB per block (RTX 30/40, A10, L4, L40) give.
# The cubin also shows 3-16 KiB of stack per thread (spills) with the full Dk = 128 in one tile and fp32 "ieee" dots
# (benchmarks/kernel_resources.py): tuning (Dk in blocks of 64, tf32x3 dots) waits for a GPU to time it on.
LAUNCH = {"cuda": dict(num_warps=4, num_stages=2), "cpu": {}}
DTYPES = KERNEL_DTYPES["delta_rule_state"]


def _add(x, y):
    return x + y


def _forward(k_ptr, w_ptr, u_ptr, d_ptr, s0_ptr, starts_ptr, corr_ptr, sf_ptr,
             n_chunks, chunk, dim_k, dim_v,
             sk_b, sk_h, sk_n, sk_c, sk_k, sw_b, sw_h, sw_n, sw_c, sw_k, su_b, su_h, su_n, su_c, su_v,
             sd_b, sd_h, sd_n, s0_b, s0_h, s0_k, s0_v,
             HEADS: tl.constexpr, HAS_DECAY: tl.constexpr,
             BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_V: tl.constexpr):
    """The pass for one (b, h) (program_id 0 = b * HEADS + h) and BLOCK_V value columns (program_id 1).
    starts, corrected and S_final are contiguous; the inputs' strides are given (elements)."""
    bh = tl.program_id(0).to(tl.int64)
    b = bh // HEADS
    h = bh % HEADS
    rows = tl.arange(0, BLOCK_C)
    ks = tl.arange(0, BLOCK_K)
    vs = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
    row_ok, k_ok, v_ok = rows < chunk, ks < dim_k, vs < dim_v
    ck_ok = row_ok[:, None] & k_ok[None, :]
    cv_ok = row_ok[:, None] & v_ok[None, :]
    kv_ok = k_ok[:, None] & v_ok[None, :]
    at_k = k_ptr + b * sk_b + h * sk_h + rows[:, None] * sk_c + ks[None, :] * sk_k
    at_w = w_ptr + b * sw_b + h * sw_h + rows[:, None] * sw_c + ks[None, :] * sw_k
    at_u = u_ptr + b * su_b + h * su_h + rows[:, None] * su_c + vs[None, :] * su_v
    at_d = d_ptr + b * sd_b + h * sd_h
    kv = ks[:, None] * dim_v + vs[None, :]
    at_start = starts_ptr + bh * n_chunks * dim_k * dim_v + kv
    at_corr = corr_ptr + bh * n_chunks * chunk * dim_v + rows[:, None] * dim_v + vs[None, :]
    S = tl.load(s0_ptr + b * s0_b + h * s0_h + ks[:, None] * s0_k + vs[None, :] * s0_v,
                mask=kv_ok, other=0.0).to(tl.float32)
    for _ in range(n_chunks):
        tl.store(at_start, S.to(starts_ptr.dtype.element_ty), mask=kv_ok)
        K = tl.load(at_k, mask=ck_ok, other=0.0).to(tl.float32)
        W = tl.load(at_w, mask=ck_ok, other=0.0).to(tl.float32)
        U = tl.load(at_u, mask=cv_ok, other=0.0).to(tl.float32)
        corrected = U - tl.dot(W, S, input_precision="ieee")
        tl.store(at_corr, corrected.to(corr_ptr.dtype.element_ty), mask=cv_ok)
        if HAS_DECAY:
            S = tl.load(at_d).to(tl.float32) * S
            at_d += sd_n
        S += tl.dot(tl.trans(K), corrected, input_precision="ieee")
        at_k += sk_n
        at_w += sw_n
        at_u += su_n
        at_start += dim_k * dim_v
        at_corr += chunk * dim_v
    tl.store(sf_ptr + bh * dim_k * dim_v + kv, S.to(sf_ptr.dtype.element_ty), mask=kv_ok)


def _backward(k_ptr, w_ptr, d_ptr, starts_ptr, corr_ptr, dstarts_ptr, dcorr_ptr, dsf_ptr,
              dk_ptr, dw_ptr, du_ptr, dd_ptr, ds0_ptr,
              n_chunks, chunk, dim_k, dim_v,
              sk_b, sk_h, sk_n, sk_c, sk_k, sw_b, sw_h, sw_n, sw_c, sw_k, sd_b, sd_h, sd_n,
              sg_b, sg_h, sg_n, sg_k, sg_v, sc_b, sc_h, sc_n, sc_c, sc_v, sf_b, sf_h, sf_k, sf_v,
              HEADS: tl.constexpr, HAS_DECAY: tl.constexpr,
              BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_V: tl.constexpr):
    """The adjoint (module docstring) for one (b, h) and BLOCK_V value columns, walking the chunks backwards.
    Strides given for K (sk_*), W (sw_*), decay (sd_*), dstarts (sg_*), dcorrected (sc_*), dS_final (sf_*);
    starts and corrected are contiguous, as _forward wrote them; so are the outputs: dU (B, H, N, C, Dv),
    dS0 (B, H, Dk, Dv) and this value block's partials dK, dW (NV, B, H, N, C, Dk), dd (NV, B, H, N)."""
    bh = tl.program_id(0).to(tl.int64)
    vb = tl.program_id(1).to(tl.int64)
    b = bh // HEADS
    h = bh % HEADS
    n_bh = tl.num_programs(0).to(tl.int64)
    rows = tl.arange(0, BLOCK_C)
    ks = tl.arange(0, BLOCK_K)
    vs = vb * BLOCK_V + tl.arange(0, BLOCK_V)
    row_ok, k_ok, v_ok = rows < chunk, ks < dim_k, vs < dim_v
    ck_ok = row_ok[:, None] & k_ok[None, :]
    cv_ok = row_ok[:, None] & v_ok[None, :]
    kv_ok = k_ok[:, None] & v_ok[None, :]
    last = n_chunks - 1
    at_k = k_ptr + b * sk_b + h * sk_h + last * sk_n + rows[:, None] * sk_c + ks[None, :] * sk_k
    at_w = w_ptr + b * sw_b + h * sw_h + last * sw_n + rows[:, None] * sw_c + ks[None, :] * sw_k
    at_d = d_ptr + b * sd_b + h * sd_h + last * sd_n
    kv = ks[:, None] * dim_v + vs[None, :]
    cv = rows[:, None] * dim_v + vs[None, :]
    ck = rows[:, None] * dim_k + ks[None, :]
    at_start = starts_ptr + (bh * n_chunks + last) * dim_k * dim_v + kv
    at_corr = corr_ptr + (bh * n_chunks + last) * chunk * dim_v + cv
    at_du = du_ptr + (bh * n_chunks + last) * chunk * dim_v + cv
    partial = vb * n_bh + bh  # this program's (value block, b, h) row of the partials
    at_dk = dk_ptr + (partial * n_chunks + last) * chunk * dim_k + ck
    at_dw = dw_ptr + (partial * n_chunks + last) * chunk * dim_k + ck
    at_dd = dd_ptr + partial * n_chunks + last
    at_dstart = dstarts_ptr + b * sg_b + h * sg_h + last * sg_n + ks[:, None] * sg_k + vs[None, :] * sg_v
    at_dcorr = dcorr_ptr + b * sc_b + h * sc_h + last * sc_n + rows[:, None] * sc_c + vs[None, :] * sc_v
    G = tl.load(dsf_ptr + b * sf_b + h * sf_h + ks[:, None] * sf_k + vs[None, :] * sf_v,
                mask=kv_ok, other=0.0).to(tl.float32)
    for _ in range(n_chunks):
        K = tl.load(at_k, mask=ck_ok, other=0.0).to(tl.float32)
        W = tl.load(at_w, mask=ck_ok, other=0.0).to(tl.float32)
        S = tl.load(at_start, mask=kv_ok, other=0.0).to(tl.float32)
        corrected = tl.load(at_corr, mask=cv_ok, other=0.0).to(tl.float32)
        d_corr = tl.load(at_dcorr, mask=cv_ok, other=0.0).to(tl.float32) + tl.dot(K, G, input_precision="ieee")
        tl.store(at_du, d_corr.to(du_ptr.dtype.element_ty), mask=cv_ok)
        tl.store(at_dk, tl.dot(corrected, tl.trans(G), input_precision="ieee"), mask=ck_ok)
        tl.store(at_dw, -tl.dot(d_corr, tl.trans(S), input_precision="ieee"), mask=ck_ok)
        d_start = tl.load(at_dstart, mask=kv_ok, other=0.0).to(tl.float32)
        if HAS_DECAY:
            tl.store(at_dd, tl.reduce(tl.reduce(S * G, 1, _ADD), 0, _ADD))
            G = tl.load(at_d).to(tl.float32) * G
            at_d -= sd_n
        G += d_start - tl.dot(tl.trans(W), d_corr, input_precision="ieee")
        at_k -= sk_n
        at_w -= sw_n
        at_start -= dim_k * dim_v
        at_corr -= chunk * dim_v
        at_du -= chunk * dim_v
        at_dk -= chunk * dim_k
        at_dw -= chunk * dim_k
        at_dd -= 1
        at_dstart -= sg_n
        at_dcorr -= sc_n
    tl.store(ds0_ptr + bh * dim_k * dim_v + kv, G.to(ds0_ptr.dtype.element_ty), mask=kv_ok)


# The combine function is passed to tl.reduce (compiled: as a JIT function; interpreted: called through its
# .fn); the kernels are launched in the mode that fits the device.
_ADD = JITFunction(_add)
_KERNELS = {
    (name, interpret): (InterpretedFunction if interpret else JITFunction)(fn)
    for name, fn in (("forward", _forward), ("backward", _backward)) for interpret in (False, True)
}


def _device_kind(x: torch.Tensor) -> str:
    return "cpu" if x.device.type == "cpu" else "cuda"


def _block(n: int, kind: str) -> int:
    return max(MIN_BLOCK[kind], triton.next_power_of_2(n))


class _TritonStatePass(torch.autograd.Function):
    """(starts, corrected, S_final) by _forward, the gradients by _backward; shapes as delta_rule_state's."""

    @staticmethod
    def forward(ctx, K, W, U, decay, S0, block_v):
        batch, heads, n_chunks, chunk, dim_k = K.shape
        dim_v = U.shape[-1]
        kind = _device_kind(K)
        blocks = dict(BLOCK_C=_block(chunk, kind), BLOCK_K=_block(dim_k, kind), BLOCK_V=block_v)
        starts = K.new_empty(batch, heads, n_chunks, dim_k, dim_v)
        corrected = K.new_empty(batch, heads, n_chunks, chunk, dim_v)
        S_final = K.new_empty(batch, heads, dim_k, dim_v)
        d_strides = decay.stride() if decay is not None else (0, 0, 0)
        launch(_KERNELS, "forward", K.device, (batch * heads, triton.cdiv(dim_v, block_v)),
            K, W, U, decay if decay is not None else K, S0, starts, corrected, S_final,
            n_chunks, chunk, dim_k, dim_v, *K.stride(), *W.stride(), *U.stride(), *d_strides, *S0.stride(),
            HEADS=heads, HAS_DECAY=decay is not None, **blocks, **LAUNCH[kind])
        ctx.save_for_backward(K, W, decay, starts, corrected)
        ctx.blocks = blocks
        return starts, corrected, S_final

    @staticmethod
    @once_differentiable
    def backward(ctx, d_starts, d_corrected, d_final):
        K, W, decay, starts, corrected = ctx.saved_tensors
        batch, heads, n_chunks, chunk, dim_k = K.shape
        dim_v = corrected.shape[-1]
        n_blocks = triton.cdiv(dim_v, ctx.blocks["BLOCK_V"])
        partial_k = torch.empty(n_blocks, batch, heads, n_chunks, chunk, dim_k, dtype=torch.float32, device=K.device)
        partial_w = torch.empty_like(partial_k)
        partial_d = torch.zeros(n_blocks, batch, heads, n_chunks, dtype=torch.float32, device=K.device)
        dU = torch.empty_like(corrected)
        dS0 = K.new_empty(batch, heads, dim_k, dim_v)
        d_strides = decay.stride() if decay is not None else (0, 0, 0)
        kind = _device_kind(K)
        launch(_KERNELS, "backward", K.device, (batch * heads, n_blocks),
            K, W, decay if decay is not None else K, starts, corrected, d_starts, d_corrected, d_final,
            partial_k, partial_w, dU, partial_d, dS0, n_chunks, chunk, dim_k, dim_v,
            *K.stride(), *W.stride(), *d_strides, *d_starts.stride(), *d_corrected.stride(), *d_final.stride(),
            HEADS=heads, HAS_DECAY=decay is not None, **ctx.blocks, **LAUNCH[kind])
        dK, dW = (p.sum(0).to(K.dtype) for p in (partial_k, partial_w))
        dd = None if decay is None else partial_d.sum(0).to(decay.dtype)
        return dK, dW, dU, dd, dS0, None


def delta_rule_state(K: torch.Tensor, W: torch.Tensor, U: torch.Tensor, decay: torch.Tensor | None,
                     S0: torch.Tensor, block_v: int | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The state pass over the chunks by the fused kernels (module docstring):

        starts_n = S_n,    U'_n = U_n - W_n S_n,    S_{n+1} = d_n S_n + K_n^T U'_n    (n = 0 .. N-1, S_0 = S0).

    K, W (B, H, N, C, Dk), U (B, H, N, C, Dv), decay (B, H, N) or None (d = 1), S0 (B, H, Dk, Dv); one dtype of
    DTYPES for all, one device (CUDA: compiled, CPU: Triton's interpreter); any strides
    -> starts (B, H, N, Dk, Dv), corrected U' (B, H, N, C, Dv), S_final (B, H, Dk, Dv), in that dtype.
    Differentiable in K, W, U, decay and S0. block_v: value columns per program, a power of two (None:
    VALUE_BLOCK for the device, or the padded Dv if smaller; compiled: at least 16).
    core.delta_rule._state_pass calls this where ssmbench.kernels.use_kernel says so.
    """
    if K.dim() != 5 or W.shape != K.shape or U.dim() != 5 or U.shape[:4] != K.shape[:4]:
        raise ValueError(f"triton delta_rule_state: give K, W as (B, H, N, C, Dk) and U as (B, H, N, C, Dv), "
                         f"got K {tuple(K.shape)}, W {tuple(W.shape)}, U {tuple(U.shape)}")
    batch, heads, n_chunks = K.shape[:3]
    if decay is not None and decay.shape != (batch, heads, n_chunks):
        raise ValueError(f"triton delta_rule_state: decay must be (B, H, N) = {(batch, heads, n_chunks)} or None, "
                         f"got {tuple(decay.shape)}")
    if S0.shape != (batch, heads, K.shape[-1], U.shape[-1]):
        raise ValueError(f"triton delta_rule_state: S0 must be (B, H, Dk, Dv) = "
                         f"{(batch, heads, K.shape[-1], U.shape[-1])}, got {tuple(S0.shape)}")
    dtypes = {t.dtype for t in (K, W, U, decay, S0) if t is not None}
    if len(dtypes) != 1 or K.dtype not in DTYPES:
        raise ValueError(f"triton delta_rule_state: K, W, U, decay and S0 must share one dtype of "
                         f"{', '.join(str(d).removeprefix('torch.') for d in DTYPES)}, got {sorted(map(str, dtypes))}")
    if min(K.shape) == 0 or U.shape[-1] == 0:
        raise ValueError(f"triton delta_rule_state: every size must be at least 1, got K {tuple(K.shape)}, "
                         f"U {tuple(U.shape)}")
    kind = _device_kind(K)
    block_v = block_v or min(VALUE_BLOCK[kind], _block(U.shape[-1], kind))
    if block_v < MIN_BLOCK[kind] or block_v & (block_v - 1):
        raise ValueError(f"triton delta_rule_state: block_v must be a power of two of at least {MIN_BLOCK[kind]} "
                         f"on {kind}, got {block_v}")
    return _TritonStatePass.apply(K, W, U, decay, S0, block_v)
