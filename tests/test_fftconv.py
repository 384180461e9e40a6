"""FFT convolutions against direct O(L^2) sums (values and gradients; odd lengths; no circular wrap)."""

import pytest
import torch

from ssmbench.core.fftconv import (bidirectional_conv, bidirectional_conv_reference, causal_conv,
                                   causal_conv_reference)

F64 = torch.float64


def signals(*shape, dtype=F64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


def test_reference_by_hand():
    u = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    K = torch.tensor([1.0, 10.0, 100.0], dtype=F64)
    torch.testing.assert_close(causal_conv_reference(u, K), torch.tensor([1.0, 12.0, 123.0], dtype=F64))
    Kb = torch.tensor([1000.0, 5.0, 7.0], dtype=F64)
    # y_0 gains Kb_0 u_1 + Kb_1 u_2, y_1 gains Kb_0 u_2
    torch.testing.assert_close(bidirectional_conv_reference(u, K, Kb),
                               torch.tensor([1.0 + 2000.0 + 15.0, 12.0 + 3000.0, 123.0], dtype=F64))


@pytest.mark.parametrize("L", [1, 2, 17, 64, 99])
def test_causal_conv_equals_reference(L):
    u, K = signals(2, 3, L), signals(3, L, seed=1)
    torch.testing.assert_close(causal_conv(u, K), causal_conv_reference(u, K), rtol=0, atol=1e-12)


@pytest.mark.parametrize("L", [1, 5, 64, 77])
def test_bidirectional_conv_equals_reference(L):
    u, Kf, Kb = signals(2, 3, L), signals(3, L, seed=1), signals(3, L, seed=2)
    torch.testing.assert_close(bidirectional_conv(u, Kf, Kb), bidirectional_conv_reference(u, Kf, Kb),
                               rtol=0, atol=1e-12)


def test_complex_inputs():
    u, K = signals(4, 31, dtype=torch.complex128), signals(31, dtype=torch.complex128, seed=3)
    torch.testing.assert_close(causal_conv(u, K), causal_conv_reference(u, K), rtol=0, atol=1e-12)


def test_no_circular_wrap():
    """A late impulse must not leak into early outputs."""
    u = torch.zeros(50, dtype=F64)
    u[-1] = 1.0
    y = causal_conv(u, torch.ones(50, dtype=F64))
    assert y[:-1].abs().max() < 1e-12 and y[-1] == pytest.approx(1.0)


def test_gradients_equal_reference():
    u, Kf, Kb = signals(2, 23), signals(23, seed=1), signals(23, seed=2)
    w = signals(2, 23, seed=4)
    grads = []
    for conv in (bidirectional_conv, bidirectional_conv_reference):
        leaves = [t.clone().requires_grad_() for t in (u, Kf, Kb)]
        (w * conv(*leaves)).sum().backward()
        grads.append([t.grad for t in leaves])
    for fast, reference in zip(*grads):
        torch.testing.assert_close(fast, reference, rtol=0, atol=1e-11)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="kernel length 5 must equal the sequence length 6"):
        causal_conv(torch.zeros(6), torch.zeros(5))
