"""The gated delta rule: the loop against the rule as written in the paper, the chunkwise form against the
loop (outputs, final states, gradients of q, k, v, beta, g and the initial state), g = 0 against the
ungated rule, strong decay over long sequences, beta in [0, 2], dtypes and input errors."""

import math
from functools import lru_cache

import pytest
import torch

from ssmbench.core.delta_rule import (delta_rule_chunkwise, delta_rule_reference, gated_delta_rule_chunkwise,
                                      gated_delta_rule_recurrent, gated_delta_rule_reference)

B, H, DK, DV = 2, 2, 8, 12
TOL = {torch.float64: 1e-10, torch.float32: 1e-4}


def make_inputs(L: int, dtype: torch.dtype, with_state: bool, seed: int = 0, beta_max: float = 2.0):
    """q, k (unit norm), v, beta in [0, beta_max] (both ends included), g = log alpha with alpha in (0, 1)
    (down to about 4e-3 at L = 1000: logsigmoid(2 N(0, 1) + 2)), and an initial state (or None), all as leaves requiring grad."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, L, DK, generator=gen, dtype=torch.float64)
    k = torch.nn.functional.normalize(torch.randn(B, H, L, DK, generator=gen, dtype=torch.float64), dim=-1)
    v = torch.randn(B, H, L, DV, generator=gen, dtype=torch.float64)
    beta = beta_max * torch.sigmoid(2 * torch.randn(B, H, L, generator=gen, dtype=torch.float64))
    beta[..., 2::7], beta[..., 5::11] = beta_max, 0.0
    g = torch.nn.functional.logsigmoid(2 * torch.randn(B, H, L, generator=gen, dtype=torch.float64) + 2)
    S0 = torch.randn(B, H, DK, DV, generator=gen, dtype=torch.float64) if with_state else None
    tensors = [t.to(dtype).requires_grad_() for t in (q, k, v, beta, g)]
    return tensors + [None if S0 is None else S0.to(dtype).requires_grad_()]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (max |a - b| / the smallest normal number when b is all zero)."""
    return float((a - b).abs().max() / b.abs().max().clamp(min=torch.finfo(b.dtype).tiny))


def run(fn, L: int, dtype: torch.dtype, with_state: bool, beta_max: float = 2.0):
    """Forward and backward of fn(q, k, v, beta, g, S0) -> (o, S) under a fixed random loss; returns
    o, S and the gradients of q, k, v, beta, g (and S0)."""
    q, k, v, beta, g, S0 = make_inputs(L, dtype, with_state, beta_max=beta_max)
    o, S = fn(q, k, v, beta, g, S0)
    gen = torch.Generator().manual_seed(1)
    loss = (o * torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.dtype)).sum()
    loss = loss + (S * torch.randn(S.shape, generator=gen, dtype=torch.float64).to(S.dtype)).sum()
    leaves = [q, k, v, beta, g] + ([S0] if with_state else [])
    grads = torch.autograd.grad(loss, leaves)
    return [o.detach(), S.detach(), *grads]


@lru_cache(maxsize=None)
def recurrent_result(L: int, dtype: torch.dtype, with_state: bool, beta_max: float = 2.0):
    return run(lambda q, k, v, b, g, S0: gated_delta_rule_recurrent(q, k, v, b, g, initial_state=S0),
               L, dtype, with_state, beta_max)


NAMES = ["o", "final state", "dq", "dk", "dv", "dbeta", "dg", "dS0"]


def test_recurrent_is_the_rule_as_written_in_the_paper():
    """S'_t = S'_{t-1} (alpha_t (I - beta_t k_t k_t^T)) + beta_t v_t k_t^T, o_t = S'_t q_t with S' = S^T (Dv, Dk)."""
    q, k, v, beta, g, S0 = (t.detach() for t in make_inputs(9, torch.float64, with_state=True))
    o, S = gated_delta_rule_recurrent(q, k, v, beta, g, initial_state=S0)
    assert gated_delta_rule_reference is gated_delta_rule_recurrent
    for b in range(B):
        for h in range(H):
            St = S0[b, h].T
            for t in range(9):
                kt, bt, alpha = k[b, h, t], beta[b, h, t], math.exp(float(g[b, h, t]))
                transition = alpha * (torch.eye(DK, dtype=torch.float64) - bt * torch.outer(kt, kt))
                St = St @ transition + bt * torch.outer(v[b, h, t], kt)
                torch.testing.assert_close(o[b, h, t], St @ q[b, h, t], rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(S[b, h], St.T, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("with_state", [False, True], ids=["S0=0", "S0"])
@pytest.mark.parametrize("L", [1, 5, 63, 100, 1000])
@pytest.mark.parametrize("chunk_size", [16, 32, 64])
def test_chunkwise_equals_recurrent_with_gradients(chunk_size, L, with_state, dtype):
    """beta spans [0, 2] (both ends included); L < chunk, odd lengths and several chunks."""
    expected = recurrent_result(L, dtype, with_state)
    got = run(lambda q, k, v, b, g, S0: gated_delta_rule_chunkwise(q, k, v, b, g, chunk_size=chunk_size,
                                                                   initial_state=S0), L, dtype, with_state)
    for name, a, e in zip(NAMES, got, expected):
        assert a.dtype == e.dtype == dtype and a.shape == e.shape, name
        assert rel_err(a, e) <= TOL[dtype], f"{name}: relative error {rel_err(a, e):.2e}"


@pytest.mark.parametrize("beta_max", [1.0, 2.0])
def test_beta_range_both_forms_agree_and_two_reaches_a_reflection(beta_max):
    expected = recurrent_result(77, torch.float64, True, beta_max)
    got = run(lambda q, k, v, b, g, S0: gated_delta_rule_chunkwise(q, k, v, b, g, chunk_size=16, initial_state=S0),
              77, torch.float64, True, beta_max)
    for name, a, e in zip(NAMES, got, expected):
        assert rel_err(a, e) <= 1e-10, name
    # beta = 2, g = 0, a unit key: one step reflects the state, S <- (I - 2 k k^T) S (eigenvalue -1 along k).
    k = torch.nn.functional.normalize(torch.randn(1, 1, 1, DK, dtype=torch.float64), dim=-1)
    S0 = torch.randn(1, 1, DK, DV, dtype=torch.float64)
    zeros = torch.zeros(1, 1, 1, dtype=torch.float64)
    _, S = gated_delta_rule_recurrent(k, k, torch.zeros(1, 1, 1, DV, dtype=torch.float64), zeros + 2, zeros, S0)
    reflection = torch.eye(DK, dtype=torch.float64) - 2 * torch.outer(k[0, 0, 0], k[0, 0, 0])
    torch.testing.assert_close(S[0, 0], reflection @ S0[0, 0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close((k[0, 0, 0] @ S[0, 0]), -(k[0, 0, 0] @ S0[0, 0]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("L", [1, 37, 130])
def test_zero_log_decay_is_the_ungated_delta_rule(L):
    q, k, v, beta, g, S0 = (t.detach() for t in make_inputs(L, torch.float64, with_state=True))
    g = torch.zeros_like(g)
    o, S = gated_delta_rule_recurrent(q, k, v, beta, g, initial_state=S0)
    o_ref, S_ref = delta_rule_reference(q, k, v, beta, initial_state=S0)
    torch.testing.assert_close(o, o_ref, rtol=0, atol=0)
    torch.testing.assert_close(S, S_ref, rtol=0, atol=0)
    o, S = gated_delta_rule_chunkwise(q, k, v, beta, g, chunk_size=32, initial_state=S0)
    o_ref, S_ref = delta_rule_chunkwise(q, k, v, beta, chunk_size=32, initial_state=S0)
    torch.testing.assert_close(o, o_ref, rtol=0, atol=0)
    torch.testing.assert_close(S, S_ref, rtol=0, atol=0)


def test_decay_scales_the_carried_state():
    """With k = 0 (no update) the state only decays: S_L = exp(g_1 + ... + g_L) S_0 and o_t = S_t^T q_t."""
    q, k, v, beta, g, S0 = (t.detach() for t in make_inputs(45, torch.float64, with_state=True))
    k = torch.zeros_like(k)
    total = torch.exp(g.cumsum(-1))  # (B, H, L)
    for fn in (gated_delta_rule_recurrent, lambda *a, **kw: gated_delta_rule_chunkwise(*a, chunk_size=16, **kw)):
        o, S = fn(q, k, v, beta, g, initial_state=S0)
        torch.testing.assert_close(S, total[..., -1, None, None] * S0, rtol=1e-12, atol=1e-12)
        expect = total[..., None] * torch.einsum("bhkv,bhlk->bhlv", S0, q)
        torch.testing.assert_close(o, expect, rtol=1e-12, atol=1e-12)


def test_split_sequence_continues_from_the_final_state():
    q, k, v, beta, g, S0 = (t.detach() for t in make_inputs(150, torch.float64, with_state=True))
    o, S = gated_delta_rule_chunkwise(q, k, v, beta, g, chunk_size=32, initial_state=S0)
    first = [t[:, :, :70] for t in (q, k, v, beta, g)]
    second = [t[:, :, 70:] for t in (q, k, v, beta, g)]
    o1, S1 = gated_delta_rule_chunkwise(*first, chunk_size=32, initial_state=S0)
    o2, S2 = gated_delta_rule_chunkwise(*second, chunk_size=32, initial_state=S1)
    torch.testing.assert_close(torch.cat([o1, o2], dim=2), o, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(S2, S, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("decay", ["alpha=1e-4", "random alpha in [1e-4, 1]"])
def test_strong_decay_over_4096_steps_is_finite_and_agrees_in_float32(decay):
    """alpha = 1e-4 per step: the cumulative decay of a 64-step chunk is 1e-256, far below float32's range;
    the chunkwise form never exponentiates a positive number, so it stays finite (values and gradients),
    and it sums decays directly (no differences of cumulative sums), so even dg, which is small where alpha
    is, agrees to float32 rounding (measured: all relative errors below 1e-6)."""
    L = 4096
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, L, 16, generator=gen)
    k = torch.nn.functional.normalize(torch.randn(1, 2, L, 16, generator=gen), dim=-1)
    v = torch.randn(1, 2, L, 16, generator=gen)
    beta = 2 * torch.rand(1, 2, L, generator=gen)
    if decay == "alpha=1e-4":
        g = torch.full((1, 2, L), math.log(1e-4))
    else:
        g = math.log(1e-4) * torch.rand(1, 2, L, generator=gen)
    results = []
    for fn in (gated_delta_rule_recurrent, gated_delta_rule_chunkwise):
        leaves = [t.clone().requires_grad_() for t in (q, k, v, beta, g)]
        o, S = fn(*leaves)
        (o.sum() + S.sum()).backward()
        results.append([o.detach(), S.detach()] + [t.grad for t in leaves])
    for name, a, e in zip(NAMES, results[1], results[0]):
        assert torch.isfinite(a).all(), name
        assert rel_err(a, e) <= 1e-5, f"{name}: relative error {rel_err(a, e):.2e}"


def test_decay_far_beyond_the_exponent_range_stays_finite():
    """g = -1000 per step (alpha = e^-1000 = 0 in float64): exp(-G) would overflow; every state is then
    just the last update, S_t = beta_t k_t v_t^T."""
    q, k, v, beta, g = (t.detach() for t in make_inputs(100, torch.float64, with_state=False)[:5])
    g = torch.full_like(g, -1000.0)
    o, S = gated_delta_rule_chunkwise(q, k, v, beta, g, chunk_size=64)
    expect = beta[..., None] * (q * k).sum(-1, keepdim=True) * v
    torch.testing.assert_close(o, expect, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(S, beta[:, :, -1, None, None] * k[:, :, -1, :, None] * v[:, :, -1, None, :])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("fn", ["recurrent", "chunkwise"])
def test_half_precision_inputs_accumulate_in_float32(fn, dtype):
    rule = {"recurrent": gated_delta_rule_recurrent,
            "chunkwise": lambda *a, **kw: gated_delta_rule_chunkwise(*a, chunk_size=16, **kw)}[fn]
    q, k, v, beta, g, S0 = (t.detach() for t in make_inputs(50, torch.float32, with_state=True))
    low = [t.to(dtype) for t in (q, k, v, beta, g)]
    o, S = rule(*low, initial_state=S0)
    assert o.dtype == dtype and S.dtype == torch.float32
    o32, S32 = gated_delta_rule_recurrent(*(t.float() for t in low), initial_state=S0)
    assert rel_err(S, S32) <= 1e-5
    assert rel_err(o.float(), o32) <= 1e-2


def test_chunkwise_under_autocast_computes_in_float32():
    q, k, v, beta, g, S0 = (t.detach() for t in make_inputs(70, torch.float32, with_state=True))
    expect = gated_delta_rule_chunkwise(q, k, v, beta, g, chunk_size=16, initial_state=S0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = gated_delta_rule_chunkwise(q, k, v, beta, g, chunk_size=16, initial_state=S0)
    for a, e in zip(got, expect):
        assert a.dtype == torch.float32 and rel_err(a, e) <= 1e-6


def test_bad_shapes_and_chunk_sizes_are_clear_errors():
    q, k, v, beta, g, _ = (t.detach() for t in make_inputs(10, torch.float32, with_state=True))
    for fn in (gated_delta_rule_recurrent, gated_delta_rule_chunkwise):
        with pytest.raises(ValueError, match=r"gated delta rule: g \(log decay\) must be \(B, H, L\)"):
            fn(q, k, v, beta, g[..., :9])
        with pytest.raises(ValueError, match="beta must be"):
            fn(q, k, v, beta[..., :5], g)
        with pytest.raises(ValueError, match="q and k"):
            fn(q, k[..., :4], v, beta, g)
        with pytest.raises(ValueError, match="v must be"):
            fn(q, k, v[:, :, :9], beta, g)
        with pytest.raises(ValueError, match="initial_state must be"):
            fn(q, k, v, beta, g, initial_state=torch.zeros(B, H, DV, DK))
    with pytest.raises(ValueError, match="the sequence length L must be at least 1"):
        gated_delta_rule_chunkwise(q[:, :, :0], k[:, :, :0], v[:, :, :0], beta[:, :, :0], g[:, :, :0])
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="gated_delta_rule_chunkwise: chunk_size must be a positive integer"):
            gated_delta_rule_chunkwise(q, k, v, beta, g, chunk_size=bad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_chunkwise_on_gpu_equals_recurrent_on_cpu():
    q, k, v, beta, g, S0 = (t.detach() for t in make_inputs(300, torch.float32, with_state=True))
    o, S = gated_delta_rule_chunkwise(*(t.cuda() for t in (q, k, v, beta, g)), chunk_size=64,
                                      initial_state=S0.cuda())
    o_ref, S_ref = gated_delta_rule_recurrent(q, k, v, beta, g, initial_state=S0)
    assert rel_err(o.cpu(), o_ref) <= 1e-4 and rel_err(S.cpu(), S_ref) <= 1e-4
