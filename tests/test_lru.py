"""ssmbench.models.lru: ring initialization, variance normalization, the recurrence against a plain
loop, step() against forward(), optimizer hints, and `ssmbench train model=lru task=copy` learning."""

import math

import pytest
import torch

from ssmbench.models.lru import LRU, LRUMixer, ring_init
from ssmbench.optim import param_groups
from tests.helpers import step_outputs, train


def test_ring_init_lies_on_the_ring_with_uniform_squared_modulus():
    g = torch.Generator().manual_seed(0)
    r_min, r_max, max_phase = 0.4, 0.9, math.pi / 10
    nu_log, theta_log, gamma_log = ring_init(20000, r_min, r_max, max_phase, generator=g)
    modulus, phase = torch.exp(-torch.exp(nu_log)), torch.exp(theta_log)
    assert modulus.min() >= r_min - 1e-6 and modulus.max() <= r_max + 1e-6
    assert phase.min() >= 0 and phase.max() <= max_phase + 1e-6
    # |lambda|^2 ~ U[r_min^2, r_max^2] and phase ~ U[0, max_phase]: means and variances of uniforms
    sq = modulus.double() ** 2
    assert sq.mean().item() == pytest.approx((r_min**2 + r_max**2) / 2, abs=0.005)
    assert sq.var().item() == pytest.approx((r_max**2 - r_min**2) ** 2 / 12, rel=0.05)
    assert phase.mean().item() == pytest.approx(max_phase / 2, rel=0.02)
    torch.testing.assert_close(torch.exp(gamma_log), torch.sqrt(1 - modulus**2), rtol=1e-5, atol=1e-6)


def test_layer_parameters_follow_the_init_and_lambda_formula():
    torch.manual_seed(0)
    lru = LRU(d_model=8, d_state=500, r_min=0.9, r_max=0.999, max_phase=math.pi)
    lam = lru.lam()
    assert lam.dtype == torch.complex64 and lam.shape == (500,)
    assert lam.abs().min() >= 0.9 - 1e-6 and lam.abs().max() <= 0.999 + 1e-6
    assert lam.angle().min() >= 0 and lam.angle().max() <= math.pi + 1e-5
    expected = torch.exp(-torch.exp(lru.nu_log) + 1j * torch.exp(lru.theta_log))
    torch.testing.assert_close(lam, expected)
    assert lru.B.is_complex() and lru.C.is_complex() and not lru.D.is_complex()


def test_layer_equals_the_plain_recurrence():
    torch.manual_seed(1)
    lru = LRU(d_model=6, d_state=10, r_min=0.5, r_max=0.99).double()
    u = torch.randn(2, 77, 6, dtype=torch.float64)
    lam = lru.lam(torch.float64)
    B = torch.exp(lru.gamma_log.double())[:, None] * lru.B.to(torch.complex128)
    C = lru.C.to(torch.complex128)
    x = torch.zeros(2, 10, dtype=torch.complex128)
    ys = []
    for u_t in u.unbind(1):
        x = lam * x + u_t.to(torch.complex128) @ B.T
        ys.append((x @ C.T).real + lru.D.double() * u_t)
    torch.testing.assert_close(lru(u), torch.stack(ys, 1), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("normalized", [True, False])
def test_gamma_normalization_keeps_white_noise_variance(normalized):
    """At r_max = 0.999 the normalized LRU keeps E[y^2] within 2x of E[u^2]; without gamma it blows up."""
    torch.manual_seed(2)
    lru = LRU(d_model=32, d_state=256, r_min=0.9, r_max=0.999)
    with torch.no_grad():
        lru.D.zero_()  # the state path only: the skip D * u is not what the normalization is for
        if not normalized:
            lru.gamma_log.zero_()
        u = torch.randn(4, 4096, 32)
        ratio = (lru(u)[:, 2048:].pow(2).mean() / u.pow(2).mean()).item()
    if normalized:
        assert 0.5 <= ratio <= 2.0
    else:
        assert ratio > 10.0


@pytest.mark.parametrize("glu", [True, False])
def test_step_equals_parallel_forward(glu):
    torch.manual_seed(3)
    mixer = LRUMixer(d_model=8, d_state=16, r_min=0.5, r_max=0.999, dropout=0.3, glu=glu).double().eval()
    u = torch.randn(3, 100, 8, dtype=torch.float64)
    state = mixer.initial_state(3, dtype=torch.float64)
    assert state.shape == (3, 16) and state.dtype == torch.complex128
    torch.testing.assert_close(step_outputs(mixer, u, state), mixer(u), rtol=1e-10, atol=1e-10)


def test_float32_step_equals_parallel_forward():
    torch.manual_seed(4)
    mixer = LRUMixer(d_model=16, d_state=32, r_min=0.9, r_max=0.999).eval()
    u = torch.randn(2, 120, 16)
    state = mixer.initial_state(2)
    with torch.no_grad():
        torch.testing.assert_close(step_outputs(mixer, u, state), mixer(u), rtol=1e-4, atol=1e-5)


def test_gradients_reach_every_parameter():
    torch.manual_seed(5)
    mixer = LRUMixer(d_model=8, d_state=16, r_min=0.9, r_max=0.999)
    mixer(torch.randn(2, 50, 8)).pow(2).sum().backward()
    for name, p in mixer.named_parameters():
        assert p.grad is not None and torch.isfinite(torch.view_as_real(p.grad) if p.is_complex() else p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_recurrent_parameters_get_their_own_lr_and_no_weight_decay():
    mixer = LRUMixer(d_model=8, d_state=16, ssm_lr=0.25e-3)
    groups = {name: (g["lr"], g["weight_decay"]) for g in param_groups(mixer, 1e-3, 0.05) for name in g["names"]}
    for name in ("lru.nu_log", "lru.theta_log", "lru.gamma_log", "lru.B"):
        assert groups[name] == (0.25e-3, 0.0), name
    assert groups["lru.C"] == (1e-3, 0.05) and groups["lru.D"] == (1e-3, 0.05)
    assert groups["glu.weight"] == (1e-3, 0.05) and groups["glu.bias"] == (1e-3, 0.0)


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="r_min < r_max"):
        LRU(8, 16, r_min=0.99, r_max=0.9)
    with pytest.raises(ValueError, match="max_phase"):
        LRU(8, 16, max_phase=7.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    torch.manual_seed(6)
    mixer = LRUMixer(d_model=16, d_state=32, r_min=0.9, r_max=0.999).eval()
    u = torch.randn(2, 1000, 16)
    with torch.no_grad():
        cpu = mixer(u)
        gpu = mixer.cuda()(u.cuda()).cpu()
    # float32 rounding over 1000 steps with |lambda| up to 0.999 (the chunk lengths differ by device)
    torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-4 * cpu.abs().max().item())


@pytest.mark.slow
def test_train_lru_on_copy_learns(tmp_path):
    """A one-layer LRU recalls 4 symbols (chance 1/8) after 8 short epochs."""
    result = train(tmp_path / "run", "model=lru", "task=copy", "task.seq_len=32", "task.n_copy=4",
                   "task.n_train=1024", "task.n_val=128", "task.n_test=256", "model.d_model=32",
                   "model.n_layers=1", "model.mixer.d_state=32", "trainer.max_epochs=8", "print_config=false")
    assert result["status"] == "completed"
    assert result["metrics"]["test/acc"] >= 0.5
