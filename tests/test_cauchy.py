"""The Cauchy kernel: the reference against an explicit double loop; chunked against the reference (values and
gradients)."""

import logging

import pytest
import torch

from ssmbench.core import cauchy as cauchy_module
from ssmbench.core.cauchy import backend_in_use, cauchy, cauchy_chunked, cauchy_reference, set_cauchy_backend

C128 = torch.complex128


@pytest.fixture(autouse=True)
def restore_settings():
    saved = cauchy_module.cauchy_settings()
    yield
    set_cauchy_backend(saved["backend"], saved["max_elements"])


def sample(batch_v=(3, 2), batch_w=(3, 1), N=5, L=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(*batch_v, N, generator=g, dtype=C128)
    w = torch.complex(-torch.rand(*batch_w, N, generator=g, dtype=torch.float64),
                      torch.randn(*batch_w, N, generator=g, dtype=torch.float64))
    z = torch.complex(torch.zeros(L, dtype=torch.float64), torch.linspace(-3, 3, L, dtype=torch.float64))
    return v, z, w


def test_reference_equals_double_loop():
    v, z, w = sample(batch_v=(2,), batch_w=(2,), N=4, L=7)
    y = cauchy_reference(v, z, w)
    for b in range(2):
        for j in range(7):
            expected = sum(v[b, i] / (z[j] - w[b, i]) for i in range(4))
            assert abs(complex(y[b, j]) - complex(expected)) < 1e-13


@pytest.mark.parametrize("max_elements", [1, 7, 40, 10**6])
def test_chunked_equals_reference_with_broadcasting(max_elements):
    v, z, w = sample()
    torch.testing.assert_close(cauchy_chunked(v, z, w, max_elements=max_elements), cauchy_reference(v, z, w),
                               rtol=0, atol=1e-13)


def test_chunked_gradients_equal_reference_gradients():
    v, z, w = sample(L=13)
    grads = []
    for fn in (cauchy_reference, lambda *a: cauchy_chunked(*a, max_elements=2 * 3 * 5)):
        leaves = [t.clone().requires_grad_() for t in (v, z, w)]
        out = fn(*leaves)
        weight = torch.linspace(0.5, 1.5, out.numel(), dtype=torch.float64).reshape(out.shape)
        (weight * out.real + out.imag ** 2).sum().backward()
        grads.append([t.grad for t in leaves])
    for reference, chunked in zip(*grads):
        assert chunked.shape == reference.shape
        torch.testing.assert_close(chunked, reference, rtol=0, atol=1e-12)


def test_chunked_gradcheck():
    v, z, w = sample(batch_v=(2,), batch_w=(1,), N=3, L=5)
    fn = lambda v, z, w: cauchy_chunked(v, z, w, max_elements=2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (v.requires_grad_(), z.requires_grad_(), w.requires_grad_()))


def test_backend_setting_is_used_and_logged_once_each(caplog):
    v, z, w = sample(batch_v=(1,), batch_w=(1,), N=4, L=10)
    assert cauchy_module.cauchy_settings()["backend"] == "chunked"    # the default
    cauchy_module._logged.clear()
    with caplog.at_level(logging.INFO, logger="ssmbench.core.cauchy"):
        for backend in ("chunked", "reference", "chunked", "reference"):
            set_cauchy_backend(backend, max_elements=8)
            assert backend_in_use() == backend
            torch.testing.assert_close(cauchy(v, z, w), cauchy_reference(v, z, w), rtol=0, atol=1e-13)
    assert [r.getMessage() for r in caplog.records] == [
        "Cauchy kernel backend: chunked (max_elements 8)", "Cauchy kernel backend: reference (max_elements 8)"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown Cauchy backend"):
        set_cauchy_backend("fast")
    with pytest.raises(ValueError, match="same last"):
        cauchy(torch.ones(3, dtype=C128), torch.ones(2, dtype=C128), torch.zeros(4, dtype=C128))
