"""Fused Triton kernels for the inter-chunk state pass of the chunkwise (gated) delta rule
(core.delta_rule._state_pass), forward and backward.

    delta_rule_state(K, W, U, decay, S0, block_v=None) -> (starts, corrected, S_final)

Shapes: K, W (B, H, N, C, Dk), U (B, H, N, C, Dv), decay (B, H, N) or None (no decay: d_n = 1), S0 (B, H, Dk, Dv)
-> starts (B, H, N, Dk, Dv), corrected (B, H, N, C, Dv), S_final (B, H, Dk, Dv), all in the inputs' one dtype
(float32, bfloat16 or float16). The pass, n = 0 .. N-1, S_0 = S0:
    starts_n = S_n,    U'_n = U_n - W_n S_n,    S_{n+1} = d_n S_n + K_n^T U'_n,    S_final = S_N.
Backward, n = N-1 .. 0, with G_{n+1} = dL/dS_{n+1} carried (G_N = dS_final) and dU'_n = dcorrected_n + K_n G_{n+1}:
    dU_n = dU'_n,    G_n = d_n G_{n+1} - W_n^T dU'_n + dstarts_n,    dS0 = G_0,
and, once the pass has written every G_{n+1}, batched matmuls in torch (no sequential dependence left):
    dK_n = U'_n G_{n+1}^T,    dW_n = -dU'_n S_n^T,    dd_n = sum(S_n * G_{n+1}).

Precision: the state S (backward: G) is carried in float32 registers and every product accumulates in float32.
The operands of each product are the inputs' dtype: float32 inputs multiply as "tf32x3" (three TF32 tensor-core
products; the error of float32 arithmetic, about 1e-7 relative, not TF32's 1e-3); 16-bit inputs multiply their
own 16-bit K and W with S, U', G or dU' rounded to that dtype for the product, as a bf16 matmul of the torch path
rounds them (the stored starts and corrected are rounded the same way).

The columns of S are independent (U' = U - W S column by column), so each program owns one (b, h) and a block
of BV value columns, keeps its S (Dk, BV) (backward: G) in registers and walks the chunks: one launch for the
whole pass instead of about 4N. The backward kernel writes G_{n+1} for every chunk ((B, H, N, Dk, Dv), as large
as starts) instead of summing dK and dW over value blocks inside the pass: no partial sums, nothing to add up,
and the two (C, Dk) products per chunk leave the kernel for cuBLAS. Dk, C and the value block are padded to
powers of two (compiled: at least 16, as tl.dot needs) with masked loads (zeros) and stores; the padding adds
zero rows and columns that leave the results unchanged. Tiles are addressed by a scalar pointer per tensor that
moves from chunk to chunk plus offsets fixed for the whole pass (a moving tile of pointers would hold two
registers per element across the loop).

CUDA tensors run the compiled kernels; CPU tensors run them in Triton's interpreter (numpy; for tests). Both
are built here from the same Python functions (as in ssmbench.kernels.linear_scan): the kernels call only
triton.language builtins (tl.full, tl.dot, tl.trans; not tl.zeros or tl.sum, which triton decorates once, at
its import, for one of the two modes).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction

from ssmbench.kernels import KERNEL_DTYPES, launch

# Value columns per program and launch settings, compiled, chosen from what benchmarks/kernel_resources.py reports
# for sm_90 at Dk = 128, C = 64 (issue 17's shape; timing them needs a GPU). At 32 columns, 8 warps and two pipeline
# stages (prefetching the next chunk's K, W, U): 16-bit inputs 128 / 145 registers (forward / backward), no spills,
# 85 / 81 KiB of shared memory; float32 inputs (what core passes: "tf32x3" splits every operand in two) 255
# registers and 0.9 / 0.75 KiB of stack per thread (triton 3.6: 1.1 / 1.0), 105 KiB; the other tiles tried (16-64
# columns, 4 or 8 warps) spill 0.7-1.1 KiB in float32 (3.6: 0.9-1.5), 16 columns at 8 warps a little less than 32:
# a GPU's timing decides. Before the products ran on tensor cores and the tiles were addressed from fixed offsets,
# float32 needed 5.5 / 13.7 KiB of stack. Interpreted: one block (fewer programs, each numpy-vectorized).
VALUE_BLOCK = {"cuda": 32, "cpu": 128}
MIN_BLOCK = {"cuda": 16, "cpu": 1}  # tl.dot's smallest compiled operand side; the interpreter takes any
LAUNCH = {"cuda": dict(num_warps=8, num_stages=2), "cpu": {}}
# The dtype tl.dot is given its (already rounded) operands in: the inputs' own compiled; float32 interpreted, where
# the same products come out exactly (a bf16 or fp16 value is a float32 one, and the sums are float32 either way)
# and triton's interpreter would multiply bfloat16 operands as their raw 16-bit patterns (numpy has no bfloat16).
DOTS = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}
DTYPES = KERNEL_DTYPES["delta_rule_state"]


def _forward(k_ptr, w_ptr, u_ptr, d_ptr, s0_ptr, starts_ptr, corr_ptr, sf_ptr,
             n_chunks, chunk, dim_k, dim_v,
             sk_b, sk_h, sk_n, sk_c, sk_k, sw_b, sw_h, sw_n, sw_c, sw_k, su_b, su_h, su_n, su_c, su_v,
             sd_b, sd_h, sd_n, s0_b, s0_h, s0_k, s0_v,
             HEADS: tl.constexpr, HAS_DECAY: tl.constexpr,
             BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_V: tl.constexpr, DOT: tl.constexpr):
    """The pass for one (b, h) and BLOCK_V value columns: program (b * HEADS + h) * value blocks + value block, so
    that the programs reading the same K and W run side by side (and find them in L2). starts, corrected and
    S_final are contiguous; the inputs' strides are given (elements). Products take operands rounded to the
    inputs' dtype ROUND and given to tl.dot as DOT (DOTS: ROUND compiled, float32 interpreted)."""
    ROUND = k_ptr.dtype.element_ty
    v_blocks = (dim_v + BLOCK_V - 1) // BLOCK_V
    bh = tl.program_id(0).to(tl.int64) // v_blocks
    b = bh // HEADS
    h = bh % HEADS
    rows = tl.arange(0, BLOCK_C)
    ks = tl.arange(0, BLOCK_K)
    vs = (tl.program_id(0) % v_blocks) * BLOCK_V + tl.arange(0, BLOCK_V)
    row_ok, k_ok, v_ok = rows < chunk, ks < dim_k, vs < dim_v
    ck_ok = row_ok[:, None] & k_ok[None, :]
    cv_ok = row_ok[:, None] & v_ok[None, :]
    kv_ok = k_ok[:, None] & v_ok[None, :]
    in_k = rows[:, None] * sk_c + ks[None, :] * sk_k
    in_w = rows[:, None] * sw_c + ks[None, :] * sw_k
    in_u = rows[:, None] * su_c + vs[None, :] * su_v
    kv = ks[:, None] * dim_v + vs[None, :]
    cv = rows[:, None] * dim_v + vs[None, :]
    k_at = k_ptr + b * sk_b + h * sk_h
    w_at = w_ptr + b * sw_b + h * sw_h
    u_at = u_ptr + b * su_b + h * su_h
    d_at = d_ptr + b * sd_b + h * sd_h
    start_at = starts_ptr + bh * n_chunks * dim_k * dim_v
    corr_at = corr_ptr + bh * n_chunks * chunk * dim_v
    S = tl.load(s0_ptr + b * s0_b + h * s0_h + ks[:, None] * s0_k + vs[None, :] * s0_v,
                mask=kv_ok, other=0.0).to(tl.float32)
    for _ in range(n_chunks):
        tl.store(start_at + kv, S.to(starts_ptr.dtype.element_ty), mask=kv_ok)
        K = tl.load(k_at + in_k, mask=ck_ok, other=0.0).to(DOT)
        W = tl.load(w_at + in_w, mask=ck_ok, other=0.0).to(DOT)
        U = tl.load(u_at + in_u, mask=cv_ok, other=0.0).to(tl.float32)
        corrected = U - tl.dot(W, S.to(ROUND).to(DOT), input_precision="tf32x3")
        tl.store(corr_at + cv, corrected.to(corr_ptr.dtype.element_ty), mask=cv_ok)
        if HAS_DECAY:
            S = tl.load(d_at).to(tl.float32) * S
            d_at += sd_n
        S += tl.dot(tl.trans(K), corrected.to(ROUND).to(DOT), input_precision="tf32x3")
        k_at += sk_n
        w_at += sw_n
        u_at += su_n
        start_at += dim_k * dim_v
        corr_at += chunk * dim_v
    tl.store(sf_ptr + bh * dim_k * dim_v + kv, S.to(sf_ptr.dtype.element_ty), mask=kv_ok)


def _backward(k_ptr, w_ptr, d_ptr, dstarts_ptr, dcorr_ptr, dsf_ptr, du_ptr, after_ptr, ds0_ptr,
              n_chunks, chunk, dim_k, dim_v,
              sk_b, sk_h, sk_n, sk_c, sk_k, sw_b, sw_h, sw_n, sw_c, sw_k, sd_b, sd_h, sd_n,
              sg_b, sg_h, sg_n, sg_k, sg_v, sc_b, sc_h, sc_n, sc_c, sc_v, sf_b, sf_h, sf_k, sf_v,
              HEADS: tl.constexpr, HAS_DECAY: tl.constexpr,
              BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_V: tl.constexpr, DOT: tl.constexpr):
    """The sequential part of the adjoint (module docstring) for one (b, h) and BLOCK_V value columns, walking the
    chunks backwards. Strides given for K (sk_*), W (sw_*), decay (sd_*), dstarts (sg_*), dcorrected (sc_*) and
    dS_final (sf_*); the outputs are contiguous: dU (B, H, N, C, Dv), G after each chunk (B, H, N, Dk, Dv) and
    dS0 (B, H, Dk, Dv). Programs and products as in _forward."""
    ROUND = k_ptr.dtype.element_ty
    v_blocks = (dim_v + BLOCK_V - 1) // BLOCK_V
    bh = tl.program_id(0).to(tl.int64) // v_blocks
    b = bh // HEADS
    h = bh % HEADS
    rows = tl.arange(0, BLOCK_C)
    ks = tl.arange(0, BLOCK_K)
    vs = (tl.program_id(0) % v_blocks) * BLOCK_V + tl.arange(0, BLOCK_V)
    row_ok, k_ok, v_ok = rows < chunk, ks < dim_k, vs < dim_v
    ck_ok = row_ok[:, None] & k_ok[None, :]
    cv_ok = row_ok[:, None] & v_ok[None, :]
    kv_ok = k_ok[:, None] & v_ok[None, :]
    in_k = rows[:, None] * sk_c + ks[None, :] * sk_k
    in_w = rows[:, None] * sw_c + ks[None, :] * sw_k
    in_dstart = ks[:, None] * sg_k + vs[None, :] * sg_v
    in_dcorr = rows[:, None] * sc_c + vs[None, :] * sc_v
    kv = ks[:, None] * dim_v + vs[None, :]
    cv = rows[:, None] * dim_v + vs[None, :]
    last = tl.cast(n_chunks - 1, tl.int64)  # offsets by whole chunks can pass 2^31 (N the outermost stride)
    k_at = k_ptr + b * sk_b + h * sk_h + last * sk_n
    w_at = w_ptr + b * sw_b + h * sw_h + last * sw_n
    d_at = d_ptr + b * sd_b + h * sd_h + last * sd_n
    dstart_at = dstarts_ptr + b * sg_b + h * sg_h + last * sg_n
    dcorr_at = dcorr_ptr + b * sc_b + h * sc_h + last * sc_n
    du_at = du_ptr + (bh * n_chunks + last) * chunk * dim_v
    after_at = after_ptr + (bh * n_chunks + last) * dim_k * dim_v
    G = tl.load(dsf_ptr + b * sf_b + h * sf_h + ks[:, None] * sf_k + vs[None, :] * sf_v,
                mask=kv_ok, other=0.0).to(tl.float32)
    for _ in range(n_chunks):
        tl.store(after_at + kv, G.to(after_ptr.dtype.element_ty), mask=kv_ok)
        K = tl.load(k_at + in_k, mask=ck_ok, other=0.0).to(DOT)
        W = tl.load(w_at + in_w, mask=ck_ok, other=0.0).to(DOT)
        d_corr = (tl.load(dcorr_at + in_dcorr, mask=cv_ok, other=0.0).to(tl.float32)
                  + tl.dot(K, G.to(ROUND).to(DOT), input_precision="tf32x3"))
        tl.store(du_at + cv, d_corr.to(du_ptr.dtype.element_ty), mask=cv_ok)
        if HAS_DECAY:
            G = tl.load(d_at).to(tl.float32) * G
            d_at -= sd_n
        G += (tl.load(dstart_at + in_dstart, mask=kv_ok, other=0.0).to(tl.float32)
              - tl.dot(tl.trans(W), d_corr.to(ROUND).to(DOT), input_precision="tf32x3"))
        k_at -= sk_n
        w_at -= sw_n
        dstart_at -= sg_n
        dcorr_at -= sc_n
        du_at -= chunk * dim_v
        after_at -= dim_k * dim_v
    tl.store(ds0_ptr + bh * dim_k * dim_v + kv, G.to(ds0_ptr.dtype.element_ty), mask=kv_ok)


# The kernels are launched in the mode that fits the device.
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
        blocks = dict(BLOCK_C=_block(chunk, kind), BLOCK_K=_block(dim_k, kind), BLOCK_V=block_v,
                      DOT=tl.float32 if kind == "cpu" else DOTS[K.dtype])
        starts = K.new_empty(batch, heads, n_chunks, dim_k, dim_v)
        corrected = K.new_empty(batch, heads, n_chunks, chunk, dim_v)
        S_final = K.new_empty(batch, heads, dim_k, dim_v)
        d_strides = decay.stride() if decay is not None else (0, 0, 0)
        launch(_KERNELS, "forward", K.device, (batch * heads * triton.cdiv(dim_v, block_v),),
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
        dU = torch.empty_like(corrected)
        after = torch.empty_like(starts)  # G_{n+1}, the gradient of the state after chunk n
        dS0 = K.new_empty(batch, heads, dim_k, dim_v)
        d_strides = decay.stride() if decay is not None else (0, 0, 0)
        launch(_KERNELS, "backward", K.device, (batch * heads * triton.cdiv(dim_v, ctx.blocks["BLOCK_V"]),),
            K, W, decay if decay is not None else K, d_starts, d_corrected, d_final, dU, after, dS0,
            n_chunks, chunk, dim_k, dim_v,
            *K.stride(), *W.stride(), *d_strides, *d_starts.stride(), *d_corrected.stride(), *d_final.stride(),
            HEADS=heads, HAS_DECAY=decay is not None, **ctx.blocks, **LAUNCH[_device_kind(K)])
        dK = corrected @ after.transpose(-1, -2)
        dW = -(dU @ starts.transpose(-1, -2))
        dd = None if decay is None else torch.einsum("bhnkv,bhnkv->bhn", starts, after)
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
