"""The delta rule: the loop against the rule as written, the chunkwise WY/UT form against the loop
(outputs, final state, gradients), padding, dtypes, and the WY/UT inverse and its entry bound."""

from functools import lru_cache

import pytest
import torch

from ssmbench.core.delta_rule import delta_rule_chunkwise, delta_rule_inverse, delta_rule_reference

B, H, DK, DV = 2, 2, 8, 12
TOL = {torch.float64: 1e-10, torch.float32: 1e-4}


def make_inputs(L: int, dtype: torch.dtype, with_state: bool, seed: int = 0):
    """q, k (unit norm), v, beta in (0, 1) and an initial state (or None), all as leaves requiring grad."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, L, DK, generator=g, dtype=torch.float64)
    k = torch.nn.functional.normalize(torch.randn(B, H, L, DK, generator=g, dtype=torch.float64), dim=-1)
    v = torch.randn(B, H, L, DV, generator=g, dtype=torch.float64)
    beta = torch.sigmoid(2 * torch.randn(B, H, L, generator=g, dtype=torch.float64))
    S0 = torch.randn(B, H, DK, DV, generator=g, dtype=torch.float64) if with_state else None
    tensors = [t.to(dtype).requires_grad_() for t in (q, k, v, beta)]
    return tensors + [None if S0 is None else S0.to(dtype).requires_grad_()]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|."""
    return float((a - b).abs().max() / b.abs().max())


def run(fn, L: int, dtype: torch.dtype, with_state: bool):
    """Forward and backward of fn(q, k, v, beta, S0) -> (o, S) under a fixed random loss; returns
    o, S and the gradients of q, k, v, beta (and S0)."""
    q, k, v, beta, S0 = make_inputs(L, dtype, with_state)
    o, S = fn(q, k, v, beta, S0)
    g = torch.Generator().manual_seed(1)
    loss = (o * torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype)).sum()
    loss = loss + (S * torch.randn(S.shape, generator=g, dtype=torch.float64).to(S.dtype)).sum()
    leaves = [q, k, v, beta] + ([S0] if with_state else [])
    grads = torch.autograd.grad(loss, leaves)
    return [o.detach(), S.detach(), *grads]


@lru_cache(maxsize=None)
def reference_result(L: int, dtype: torch.dtype, with_state: bool):
    return run(lambda q, k, v, b, S0: delta_rule_reference(q, k, v, b, initial_state=S0), L, dtype, with_state)


def test_reference_is_the_rule_as_written_in_the_paper():
    """S'_t = S'_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T, o_t = S'_t q_t with S' = S^T (Dv, Dk)."""
    q, k, v, beta, S0 = (t.detach() for t in make_inputs(7, torch.float64, with_state=True))
    o, S = delta_rule_reference(q, k, v, beta, initial_state=S0)
    for b in range(B):
        for h in range(H):
            St = S0[b, h].T
            for t in range(7):
                kt, bt = k[b, h, t], beta[b, h, t]
                decay = torch.eye(DK, dtype=torch.float64) - bt * torch.outer(kt, kt)
                St = St @ decay + bt * torch.outer(v[b, h, t], kt)
                torch.testing.assert_close(o[b, h, t], St @ q[b, h, t], rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(S[b, h], St.T, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("with_state", [False, True], ids=["S0=0", "S0"])
@pytest.mark.parametrize("L", [1, 63, 100, 1000])
@pytest.mark.parametrize("chunk_size", [16, 32, 64])
def test_chunkwise_equals_reference_with_gradients(chunk_size, L, with_state, dtype):
    expected = reference_result(L, dtype, with_state)
    got = run(lambda q, k, v, b, S0: delta_rule_chunkwise(q, k, v, b, chunk_size=chunk_size, initial_state=S0),
              L, dtype, with_state)
    names = ["o", "final state", "dq", "dk", "dv", "dbeta", "dS0"]
    for name, a, e in zip(names, got, expected):
        assert a.dtype == e.dtype == dtype and a.shape == e.shape, name
        assert rel_err(a, e) <= TOL[dtype], f"{name}: relative error {rel_err(a, e):.2e}"


def test_padding_steps_with_zero_beta_and_key_leave_the_state_unchanged():
    q, k, v, beta, S0 = (t.detach() for t in make_inputs(5, torch.float64, with_state=True))
    k, beta = torch.zeros_like(k), torch.zeros_like(beta)
    o, S = delta_rule_reference(q, k, v, beta, initial_state=S0)
    torch.testing.assert_close(S, S0, rtol=0, atol=0)
    torch.testing.assert_close(o, torch.einsum("bhkv,bhlk->bhlv", S0, q))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("fn", ["reference", "chunkwise"])
def test_half_precision_inputs_accumulate_in_float32(fn, dtype):
    rule = {"reference": delta_rule_reference,
            "chunkwise": lambda *a, **kw: delta_rule_chunkwise(*a, chunk_size=16, **kw)}[fn]
    q, k, v, beta, S0 = (t.detach() for t in make_inputs(50, torch.float32, with_state=True))
    low = [t.to(dtype) for t in (q, k, v, beta)]
    o, S = rule(*low, initial_state=S0)
    assert o.dtype == dtype and S.dtype == torch.float32
    o32, S32 = delta_rule_reference(*(t.float() for t in low), initial_state=S0)
    assert rel_err(S, S32) <= 1e-5
    assert rel_err(o.float(), o32) <= 1e-2


def test_inverse_is_the_inverse_of_the_unit_lower_triangular_matrix():
    g = torch.Generator().manual_seed(0)
    K = torch.randn(3, 20, 6, generator=g, dtype=torch.float64)
    beta = torch.rand(3, 20, generator=g, dtype=torch.float64)
    M = torch.eye(20, dtype=torch.float64) + torch.tril(beta[..., None] * (K @ K.transpose(-1, -2)), -1)
    torch.testing.assert_close(delta_rule_inverse(K, beta), torch.linalg.inv(M), rtol=1e-10, atol=1e-10)
    ones = torch.ones(3, 20, dtype=torch.float64)
    torch.testing.assert_close(delta_rule_inverse(K), delta_rule_inverse(K, ones), rtol=0, atol=0)


def test_inverse_entries_are_products_of_householder_like_factors():
    """Entry (i, j), i > j, equals -beta_i k_i^T P k_j, P = prod_{m=i-1..j+1} (I - beta_m k_m k_m^T)."""
    g = torch.Generator().manual_seed(1)
    K = torch.randn(9, 4, generator=g, dtype=torch.float64)
    beta = torch.rand(9, generator=g, dtype=torch.float64)
    inv = delta_rule_inverse(K, beta)
    eye = torch.eye(4, dtype=torch.float64)
    for i in range(9):
        for j in range(i):
            P = eye.clone()
            for m in range(i - 1, j, -1):
                P = P @ (eye - beta[m] * torch.outer(K[m], K[m]))
            torch.testing.assert_close(inv[i, j], -beta[i] * K[i] @ P @ K[j], rtol=1e-10, atol=1e-12)


def bounded_key_sets(g: torch.Generator) -> list[torch.Tensor]:
    """Key matrices (n, C, Dk) with every ||k_i|| <= 1: random norms, norm exactly 1, nearly parallel,
    a few directions in a low dimension, identical keys."""
    unit = lambda x: torch.nn.functional.normalize(x, dim=-1)
    sets = []
    for C, Dk in [(64, 2), (64, 8), (64, 64), (33, 3), (16, 128)]:
        x = unit(torch.randn(200, C, Dk, generator=g, dtype=torch.float64))
        sets.append(x)
        sets.append(x * torch.rand(200, C, 1, generator=g, dtype=torch.float64))
        base = torch.randn(200, 1, Dk, generator=g, dtype=torch.float64)
        for eps in (1e-1, 1e-3, 1e-6):
            sets.append(unit(base + eps * torch.randn(200, C, Dk, generator=g, dtype=torch.float64)))
        signs = torch.randint(0, 2, (200, C, 1), generator=g).double() * 2 - 1
        sets.append(unit(signs * base + 1e-2 * torch.randn(200, C, Dk, generator=g, dtype=torch.float64)))
        sets.append(unit(base).expand(200, C, Dk))
    return sets


def test_inverse_entries_lie_in_minus_one_one_for_keys_of_norm_at_most_one():
    g = torch.Generator().manual_seed(0)
    largest = 0.0
    for K in bounded_key_sets(g):
        assert K.norm(dim=-1).max() <= 1 + 1e-12
        inv = delta_rule_inverse(K)
        assert torch.isfinite(inv).all()
        largest = max(largest, float(inv.abs().max()))
        assert inv.abs().max() <= 1 + 1e-9, f"entry {float(inv.abs().max())} outside [-1, 1]"
    assert largest >= 1 - 1e-9  # the bound is attained (diagonal, and identical keys), so it is tight


def test_inverse_entries_can_leave_minus_one_one_for_longer_keys():
    K = torch.full((3, 1), 2.0, dtype=torch.float64)
    assert delta_rule_inverse(K).abs().max() > 1


def test_bad_shapes_and_chunk_sizes_are_clear_errors():
    q, k, v, beta, _ = (t.detach() for t in make_inputs(10, torch.float32, with_state=True))
    with pytest.raises(ValueError, match="beta must be"):
        delta_rule_reference(q, k, v, beta[..., :5])
    with pytest.raises(ValueError, match="q and k"):
        delta_rule_chunkwise(q, k[..., :4], v, beta)
    with pytest.raises(ValueError, match="v must be"):
        delta_rule_chunkwise(q, k, v[:, :, :9], beta)
    with pytest.raises(ValueError, match="initial_state must be"):
        delta_rule_chunkwise(q, k, v, beta, initial_state=torch.zeros(B, H, DV, DK))
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        delta_rule_chunkwise(q, k, v, beta, chunk_size=0)
    with pytest.raises(ValueError, match="beta must be"):
        delta_rule_inverse(k, beta[..., :3])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_chunkwise_on_gpu_equals_reference_on_cpu():
    q, k, v, beta, S0 = (t.detach() for t in make_inputs(300, torch.float32, with_state=True))
    o, S = delta_rule_chunkwise(*(t.cuda() for t in (q, k, v, beta)), chunk_size=64, initial_state=S0.cuda())
    o_ref, S_ref = delta_rule_reference(q, k, v, beta, initial_state=S0)
    assert rel_err(o.cpu(), o_ref) <= 1e-4 and rel_err(S.cpu(), S_ref) <= 1e-4
