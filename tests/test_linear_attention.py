"""Causal linear attention: the loop against the rule as written (and against masked quadratic
attention), the chunkwise form against the loop (outputs, final state, gradients), the normalizer
against its loop, dtypes and argument errors."""

from functools import lru_cache

import pytest
import torch

from ssmbench.core.linear_attention import (linear_attention_chunkwise, linear_attention_normalizer,
                                            linear_attention_normalizer_reference, linear_attention_recurrent)

B, H, DK, DV = 2, 2, 8, 12
TOL = {torch.float64: 1e-10, torch.float32: 1e-4}


def make_inputs(L: int, dtype: torch.dtype, with_state: bool, seed: int = 0):
    """q, k (positive, as after the elu + 1 feature map), v and an initial state (or None), all as
    leaves requiring grad."""
    g = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.elu(torch.randn(B, H, L, DK, generator=g, dtype=torch.float64)) + 1
    k = torch.nn.functional.elu(torch.randn(B, H, L, DK, generator=g, dtype=torch.float64)) + 1
    v = torch.randn(B, H, L, DV, generator=g, dtype=torch.float64)
    S0 = torch.randn(B, H, DK, DV, generator=g, dtype=torch.float64) if with_state else None
    tensors = [t.to(dtype).requires_grad_() for t in (q, k, v)]
    return tensors + [None if S0 is None else S0.to(dtype).requires_grad_()]


def plain_inputs(L: int, dtype: torch.dtype = torch.float64):
    """q, k, v of `make_inputs`, detached."""
    return [t.detach() for t in make_inputs(L, dtype, with_state=False)[:3]]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|."""
    return float((a - b).abs().max() / b.abs().max())


def run(fn, L: int, dtype: torch.dtype, with_state: bool):
    """Forward and backward of fn(q, k, v, S0) -> (o, S) under a fixed random loss; returns o, S and
    the gradients of q, k, v (and S0)."""
    q, k, v, S0 = make_inputs(L, dtype, with_state)
    o, S = fn(q, k, v, S0)
    g = torch.Generator().manual_seed(1)
    loss = (o * torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype)).sum()
    loss = loss + (S * torch.randn(S.shape, generator=g, dtype=torch.float64).to(S.dtype)).sum()
    leaves = [q, k, v] + ([S0] if with_state else [])
    grads = torch.autograd.grad(loss, leaves)
    return [o.detach(), S.detach(), *grads]


@lru_cache(maxsize=None)
def recurrent_result(L: int, dtype: torch.dtype, with_state: bool):
    return run(lambda q, k, v, S0: linear_attention_recurrent(q, k, v, initial_state=S0), L, dtype, with_state)


def test_recurrent_is_the_rule_as_written():
    """S_t = S_{t-1} + k_t v_t^T, o_t = S_t^T q_t, one head at a time with outer products."""
    q, k, v, S0 = (t.detach() for t in make_inputs(7, torch.float64, with_state=True))
    o, S = linear_attention_recurrent(q, k, v, initial_state=S0)
    for b in range(B):
        for h in range(H):
            St = S0[b, h].clone()
            for t in range(7):
                St = St + torch.outer(k[b, h, t], v[b, h, t])
                torch.testing.assert_close(o[b, h, t], St.T @ q[b, h, t], rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(S[b, h], St, rtol=1e-12, atol=1e-12)


def test_recurrent_equals_causally_masked_quadratic_attention():
    """o = tril(Q K^T) V + Q S_0: attention with the softmax removed and a causal mask."""
    q, k, v, S0 = (t.detach() for t in make_inputs(19, torch.float64, with_state=True))
    o, _ = linear_attention_recurrent(q, k, v, initial_state=S0)
    expect = torch.tril(q @ k.transpose(-1, -2)) @ v + q @ S0
    torch.testing.assert_close(o, expect, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("with_state", [False, True], ids=["S0=0", "S0"])
@pytest.mark.parametrize("L", [1, 5, 63, 100, 257])
@pytest.mark.parametrize("chunk_size", [16, 64])
def test_chunkwise_equals_recurrent_with_gradients(chunk_size, L, with_state, dtype):
    expected = recurrent_result(L, dtype, with_state)
    got = run(lambda q, k, v, S0: linear_attention_chunkwise(q, k, v, chunk_size=chunk_size, initial_state=S0),
              L, dtype, with_state)
    names = ["o", "final state", "dq", "dk", "dv", "dS0"]
    for name, a, e in zip(names, got, expected):
        assert a.dtype == e.dtype == dtype and a.shape == e.shape, name
        assert rel_err(a, e) <= TOL[dtype], f"{name}: relative error {rel_err(a, e):.2e}"


def test_final_state_continues_the_sequence():
    """Running L1 tokens, then L2 tokens from the final state, equals running L1 + L2 tokens."""
    q, k, v = plain_inputs(45)
    o, S = linear_attention_chunkwise(q, k, v, chunk_size=16)
    o1, S1 = linear_attention_chunkwise(q[:, :, :20], k[:, :, :20], v[:, :, :20], chunk_size=16)
    o2, S2 = linear_attention_chunkwise(q[:, :, 20:], k[:, :, 20:], v[:, :, 20:], chunk_size=16, initial_state=S1)
    torch.testing.assert_close(torch.cat([o1, o2], dim=2), o, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(S2, S, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(S, torch.einsum("bhlk,bhlv->bhkv", k, v), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("with_z", [False, True], ids=["z0=0", "z0"])
@pytest.mark.parametrize("L", [1, 37])
def test_normalizer_equals_its_loop_with_gradients(L, with_z):
    q, k, _, _ = make_inputs(L, torch.float64, with_state=False)
    g = torch.Generator().manual_seed(2)
    z0 = torch.rand(B, H, DK, generator=g, dtype=torch.float64).requires_grad_() if with_z else None
    leaves = [q, k] + ([z0] if with_z else [])
    results = []
    for fn in (linear_attention_normalizer, linear_attention_normalizer_reference):
        den, z = fn(q, k, initial_z=z0)
        w = torch.randn(den.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        loss = (den * w).sum() + (z * torch.arange(DK, dtype=torch.float64)).sum()
        results.append([den.detach(), z.detach(), *torch.autograd.grad(loss, leaves)])
    for name, a, e in zip(["den", "z", "dq", "dk", "dz0"], *results):
        assert a.shape == e.shape, name
        assert rel_err(a, e) <= 1e-12, f"{name}: relative error {rel_err(a, e):.2e}"


def test_normalizer_is_linear_attention_with_unit_values():
    """den_t = q_t^T sum_{s<=t} k_s is o_t for v = 1 (Dv = 1), S_0 = z_0; the normalized output is the
    paper's Section 3.3: sum_s (q_t^T k_s) v_s / sum_s (q_t^T k_s), a convex combination of v_1..v_t."""
    q, k, v = plain_inputs(23)
    z0 = torch.rand(B, H, DK, dtype=torch.float64)
    den, z = linear_attention_normalizer(q, k, initial_z=z0)
    ones, S = linear_attention_recurrent(q, k, torch.ones(B, H, 23, 1, dtype=torch.float64),
                                         initial_state=z0[..., None])
    torch.testing.assert_close(den, ones[..., 0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(z, S[..., 0], rtol=1e-12, atol=1e-12)
    den, _ = linear_attention_normalizer(q, k)
    o, _ = linear_attention_chunkwise(q, k, v, chunk_size=8)
    weights = torch.tril(q @ k.transpose(-1, -2))
    weights = weights / weights.sum(-1, keepdim=True)
    torch.testing.assert_close(o / den[..., None], weights @ v, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("fn", ["recurrent", "chunkwise"])
def test_half_precision_inputs_accumulate_in_float32(fn, dtype):
    rule = {"recurrent": linear_attention_recurrent,
            "chunkwise": lambda *a, **kw: linear_attention_chunkwise(*a, chunk_size=16, **kw)}[fn]
    q, k, v, S0 = (t.detach() for t in make_inputs(50, torch.float32, with_state=True))
    low = [t.to(dtype) for t in (q, k, v)]
    o, S = rule(*low, initial_state=S0)
    assert o.dtype == dtype and S.dtype == torch.float32
    o32, S32 = linear_attention_recurrent(*(t.float() for t in low), initial_state=S0)
    assert rel_err(S, S32) <= 1e-5
    assert rel_err(o.float(), o32) <= 1e-2
    den, z = linear_attention_normalizer(low[0], low[1])
    assert den.dtype == dtype and z.dtype == torch.float32


@pytest.mark.parametrize("fn", [linear_attention_recurrent, linear_attention_chunkwise])
def test_autocast_does_not_lower_the_precision(fn):
    """Under bfloat16 autocast the products still run in float32 (bfloat16 matmuls would give ~1e-3)."""
    q, k, v = plain_inputs(96, torch.float32)
    expect, S_expect = linear_attention_recurrent(q.double(), k.double(), v.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        o, S = fn(q, k, v)
        den, _ = linear_attention_normalizer(q, k)
    assert o.dtype == S.dtype == den.dtype == torch.float32
    assert rel_err(o.double(), expect) < 1e-5 and rel_err(S.double(), S_expect) < 1e-5
    assert rel_err(den.double(), linear_attention_normalizer_reference(q.double(), k.double())[0]) < 1e-5


def test_bad_shapes_and_chunk_sizes_are_clear_errors():
    q, k, v = plain_inputs(10, torch.float32)
    with pytest.raises(ValueError, match="q and k"):
        linear_attention_recurrent(q, k[..., :4], v)
    with pytest.raises(ValueError, match="v must be"):
        linear_attention_chunkwise(q, k, v[:, :, :9])
    with pytest.raises(ValueError, match="initial_state must be"):
        linear_attention_chunkwise(q, k, v, initial_state=torch.zeros(B, H, DV, DK))
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        linear_attention_chunkwise(q, k, v, chunk_size=0)
    with pytest.raises(ValueError, match="L must be at least 1"):
        linear_attention_chunkwise(q[:, :, :0], k[:, :, :0], v[:, :, :0])
    with pytest.raises(ValueError, match="initial_z must be"):
        linear_attention_normalizer(q, k, initial_z=torch.zeros(B, H, DK + 1))
    with pytest.raises(ValueError, match="q and k"):
        linear_attention_normalizer_reference(q, k[:, :1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_chunkwise_on_gpu_equals_recurrent_on_cpu():
    q, k, v, S0 = (t.detach() for t in make_inputs(300, torch.float32, with_state=True))
    o, S = linear_attention_chunkwise(*(t.cuda() for t in (q, k, v)), chunk_size=64, initial_state=S0.cuda())
    o_ref, S_ref = linear_attention_recurrent(q, k, v, initial_state=S0)
    assert rel_err(o.cpu(), o_ref) <= 1e-4 and rel_err(S.cpu(), S_ref) <= 1e-4
