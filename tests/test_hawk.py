"""ssmbench.models.hawk: the RG-LRU against a plain loop of the paper's equations (values and gradients),
the a^c initialization, the variance normalization, step() against forward(), causality, the initialization
of the block, optimizer hints, the config, and `ssmbench train model=hawk task=copy` learning."""

import math

import pytest
import torch
from hydra.utils import instantiate

from ssmbench.core.scan import linear_scan
from ssmbench.models.hawk import MAX_SQRT_GRADIENT, BlockDiagonalLinear, HawkMixer, RGLRU, bounded_sqrt, lambda_init
from ssmbench.models.short_conv import ShortConv
from ssmbench.optim import param_groups
from tests.compose import composed
from tests.helpers import step_outputs, train


def rg_lru_loop(m: RGLRU, x: torch.Tensor, h0: torch.Tensor | None) -> torch.Tensor:
    """The paper's equations step by step, with a = sigma(-Lambda) and a_t = a^(c r_t) as powers."""
    w_a, w_x = torch.block_diag(*m.a_gate.weight), torch.block_diag(*m.input_gate.weight)
    a = torch.sigmoid(-m.Lambda)
    h = torch.zeros_like(x[:, 0]) if h0 is None else h0
    hs = []
    for x_t in x.unbind(1):
        r = torch.sigmoid(x_t @ w_a + m.a_gate.bias)
        i = torch.sigmoid(x_t @ w_x + m.input_gate.bias)
        a_t = a ** (m.c * r)
        h = a_t * h + torch.sqrt(1 - a_t**2) * (i * x_t)
        hs.append(h)
    return torch.stack(hs, 1)


def test_bounded_sqrt_has_the_sqrt_values_and_a_derivative_clipped_at_1000():
    u = torch.tensor([0.0, 1e-9, 2.5e-7, 1e-4, 0.25, 1.0, 4.0], dtype=torch.float64, requires_grad=True)
    y = bounded_sqrt(u)
    torch.testing.assert_close(y, torch.sqrt(u), rtol=0, atol=0)
    (g,) = torch.autograd.grad(y.sum(), u)
    expected = torch.tensor([1000.0, 1000.0, 1000.0, 50.0, 1.0, 0.5, 0.25], dtype=torch.float64)
    torch.testing.assert_close(g, expected, rtol=1e-12, atol=0)
    assert MAX_SQRT_GRADIENT == 1000.0


@pytest.mark.parametrize("saturated", ["a_gate.bias", "Lambda"])
def test_gradients_stay_finite_when_a_t_reaches_one(saturated):
    """a-gate bias -120 (r_t = 0) or Lambda -120 (softplus(Lambda) = 0) underflow in float32 to a_t = 1, where
    the plain sqrt(1 - a_t^2) has an infinite derivative and gives NaN gradients; the bounded one does not."""
    torch.manual_seed(9)
    m = RGLRU(8, num_heads=2)
    with torch.no_grad():
        m.get_parameter(saturated).fill_(-120.0)
    x = torch.randn(2, 20, 8, requires_grad=True)
    log_a, gated = m.gates(x)
    assert (log_a == 0).all()
    plain = linear_scan(torch.exp(log_a), torch.sqrt(-torch.expm1(2 * log_a)) * gated)
    assert any(torch.isnan(g).any() for g in torch.autograd.grad(plain.sum(), [x, *m.parameters()]))
    grads = torch.autograd.grad(m(x).sum(), [x, *m.parameters()])
    assert all(torch.isfinite(g).all() for g in grads)


def test_lambda_init_makes_a_to_the_c_uniform_on_the_range():
    g = torch.Generator().manual_seed(0)
    lam = lambda_init(20000, c=8.0, a_min=0.9, a_max=0.999, generator=g)
    ac = torch.exp(-8.0 * torch.nn.functional.softplus(lam.double()))
    assert ac.min() >= 0.9 - 1e-6 and ac.max() <= 0.999 + 1e-6
    assert ac.mean().item() == pytest.approx((0.9 + 0.999) / 2, abs=0.002)      # U[0.9, 0.999]
    assert ac.var().item() == pytest.approx(0.099**2 / 12, rel=0.05)
    m = HawkMixer(d_model=30, num_heads=3)
    ac = torch.exp(-m.rg_lru.c * torch.nn.functional.softplus(m.rg_lru.Lambda))
    assert ac.min() >= 0.9 - 1e-6 and ac.max() <= 0.999 + 1e-6


@pytest.mark.parametrize("length", [5, 77])
@pytest.mark.parametrize("with_h0", [False, True])
def test_rg_lru_equals_the_plain_loop_in_values_and_gradients(length, with_h0):
    torch.manual_seed(1)
    m = RGLRU(12, num_heads=3, a_min=0.5, a_max=0.999).double()
    with torch.no_grad():
        m.a_gate.bias.normal_()
        m.input_gate.bias.normal_()
    x = torch.randn(2, length, 12, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 12, dtype=torch.float64, requires_grad=True) if with_h0 else None
    probe = torch.randn(2, length, 12, dtype=torch.float64)
    inputs = [x, *([h0] if with_h0 else []), *m.parameters()]
    fast = m(x, h0)
    slow = rg_lru_loop(m, x, h0)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-12)
    g_fast = torch.autograd.grad((fast * probe).sum(), inputs)
    g_slow = torch.autograd.grad((slow * probe).sum(), inputs)
    for gf, gs in zip(g_fast, g_slow):
        torch.testing.assert_close(gf, gs, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("normalized", [True, False])
def test_normalization_keeps_the_state_variance_near_one_for_a_near_one(normalized):
    """A drive i_t x_t that the gates do not correlate with (a-gate without its diagonal, input gate
    constant 1/2): E[h^2] / E[(i x)^2] is 1 at stationarity with sqrt(1 - a_t^2), about 200 without."""
    torch.manual_seed(2)
    m = RGLRU(64, num_heads=4, a_min=0.99, a_max=0.999)
    with torch.no_grad():
        m.input_gate.weight.zero_()
        m.a_gate.weight.mul_(1 - torch.eye(16))
        x = torch.randn(4, 8192, 64)
        log_a, drive = m.gates(x)
        assert torch.exp(log_a).std(1).mean() > 1e-4  # a_t varies over time
        h = m(x) if normalized else linear_scan(torch.exp(log_a), drive)
        ratio = (h[:, 4096:].pow(2).mean() / drive.pow(2).mean()).item()
    if normalized:
        assert 0.8 <= ratio <= 1.2
    else:
        assert ratio > 50


def test_conv_without_activation_is_the_plain_causal_filter():
    torch.manual_seed(3)
    conv = ShortConv(5, 4, bias=True, silu=False)
    x = torch.randn(2, 9, 5)
    w, b = conv.conv.weight[:, 0], conv.conv.bias  # (C, K), (C,)
    xp = torch.nn.functional.pad(x, (0, 0, 3, 0))
    expected = torch.stack([(xp[:, t:t + 4].transpose(1, 2) * w).sum(-1) + b for t in range(9)], 1)
    torch.testing.assert_close(conv(x), expected)
    assert (conv(x) < -0.3).any()  # no SiLU (whose minimum is about -0.28)


def test_mixer_equals_the_written_out_composition_in_float64():
    """linear_x -> causal depthwise conv -> RG-LRU loop, times tanh-gelu(linear_y), -> linear_out."""
    torch.manual_seed(10)
    mixer = HawkMixer(d_model=6, num_heads=2, d_conv=3, a_min=0.5, a_max=0.999).double()
    with torch.no_grad():
        for p in (mixer.conv.conv.bias, mixer.rg_lru.a_gate.bias, mixer.rg_lru.input_gate.bias,
                  mixer.linear_x.bias, mixer.linear_y.bias, mixer.linear_out.bias):
            p.normal_()
    u = torch.randn(2, 11, 6, dtype=torch.float64)
    x = u @ mixer.linear_x.weight.T + mixer.linear_x.bias
    w, b = mixer.conv.conv.weight[:, 0], mixer.conv.conv.bias   # (W, 3): w[:, k] multiplies x_{t - 2 + k}
    conv = torch.stack([sum(w[:, k] * x[:, t - 2 + k] for k in range(3) if t - 2 + k >= 0) + b
                        for t in range(11)], 1)
    h = rg_lru_loop(mixer.rg_lru, conv, None)
    g = u @ mixer.linear_y.weight.T + mixer.linear_y.bias
    gate = 0.5 * g * (1 + torch.tanh(math.sqrt(2 / math.pi) * (g + 0.044715 * g**3)))
    expected = (h * gate) @ mixer.linear_out.weight.T + mixer.linear_out.bias
    torch.testing.assert_close(mixer(u), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("length", [3, 100])
def test_step_equals_parallel_forward_in_float64(length):
    torch.manual_seed(4)
    mixer = HawkMixer(d_model=8, num_heads=2, a_min=0.5, a_max=0.999).double()
    u = torch.randn(3, length, 8, dtype=torch.float64)
    state = mixer.initial_state(3, dtype=torch.float64)
    assert state["h"].shape == (3, mixer.d_rnn) and state["h"].dtype == torch.float64
    assert state["conv"].shape == (3, mixer.d_rnn, 3)
    torch.testing.assert_close(step_outputs(mixer, u, state), mixer(u), rtol=1e-10, atol=1e-12)


def test_float32_step_equals_parallel_forward():
    torch.manual_seed(5)
    mixer = HawkMixer(d_model=16)
    u = torch.randn(2, 120, 16)
    with torch.no_grad():
        out = mixer(u)
        torch.testing.assert_close(step_outputs(mixer, u, mixer.initial_state(2)), out,
                                   rtol=1e-4, atol=1e-5 * out.abs().max().item())


def test_mixer_is_causal():
    torch.manual_seed(6)
    mixer = HawkMixer(d_model=8, num_heads=2).double()
    u = torch.randn(2, 40, 8, dtype=torch.float64)
    v = u.clone()
    v[:, 25:] += torch.randn(2, 15, 8, dtype=torch.float64)
    y, z = mixer(u), mixer(v)
    torch.testing.assert_close(y[:, :25], z[:, :25], rtol=0, atol=0)
    assert (y[:, 25] - z[:, 25]).abs().max() > 1e-6


def test_block_follows_the_published_initialization():
    torch.manual_seed(7)
    m = HawkMixer(d_model=384, num_heads=8, n_layers=4)
    assert m.d_rnn == 512                                       # 4/3 D, a multiple of num_heads
    assert HawkMixer(d_model=128).d_rnn == 172                  # ceil(170.7 / 4) * 4
    assert m.linear_x.weight.std().item() == pytest.approx(384 ** -0.5, rel=0.02)
    assert m.linear_y.weight.std().item() == pytest.approx(384 ** -0.5, rel=0.02)
    assert m.linear_out.weight.std().item() == pytest.approx(math.sqrt(2 / 4 / 512), rel=0.02)
    assert m.conv.conv.weight.std().item() == pytest.approx(math.sqrt(0.01 / 4), rel=0.1)
    assert m.rg_lru.a_gate.weight.shape == (8, 64, 64)
    assert m.rg_lru.a_gate.weight.std().item() == pytest.approx(64 ** -0.5, rel=0.02)
    for bias in (m.linear_x.bias, m.linear_y.bias, m.linear_out.bias, m.conv.conv.bias,
                 m.rg_lru.a_gate.bias, m.rg_lru.input_gate.bias):
        assert torch.equal(bias, torch.zeros_like(bias))
    assert not m.conv.silu


def test_gradients_reach_every_parameter():
    torch.manual_seed(8)
    mixer = HawkMixer(d_model=8, num_heads=2)
    mixer(torch.randn(2, 50, 8)).pow(2).sum().backward()
    for name, p in mixer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_lambda_has_its_own_lr_and_no_weight_decay():
    mixer = HawkMixer(d_model=8, num_heads=2, ssm_lr=2e-4)
    groups = {name: (g["lr"], g["weight_decay"]) for g in param_groups(mixer, 1e-3, 0.05) for name in g["names"]}
    assert groups["rg_lru.Lambda"] == (2e-4, 0.0)
    assert groups["rg_lru.a_gate.weight"] == (1e-3, 0.05) and groups["rg_lru.a_gate.bias"] == (1e-3, 0.0)
    assert groups["linear_x.weight"] == (1e-3, 0.05) and groups["conv.conv.weight"] == (1e-3, 0.05)
    base = {name: g for g in param_groups(HawkMixer(d_model=8, num_heads=2), 1e-3, 0.05) for name in g["names"]}
    assert (base["rg_lru.Lambda"]["lr"], base["rg_lru.Lambda"]["weight_decay"]) == (1e-3, 0.0)


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="a_min < a_max"):
        HawkMixer(8, a_min=0.999, a_max=0.9)
    with pytest.raises(ValueError, match="must be positive"):
        HawkMixer(8, num_heads=0)
    with pytest.raises(ValueError, match="width=10 must be a multiple of num_blocks=3"):
        BlockDiagonalLinear(10, 3)
    with pytest.raises(ValueError, match="width=10 must be a multiple of num_blocks=4"):
        RGLRU(10, num_heads=4)


def test_config_builds_the_published_block():
    with composed("model=hawk", "task=copy") as cfg:
        net = instantiate(cfg.model)
    block = net.blocks[0]
    assert isinstance(block.mixer, HawkMixer) and net.causal and len(net.blocks) == 2
    assert block.norm.kind == "rms" and net.positional == "none"
    assert block.ff is not None and block.ff.inp.out_features == 2 * 3 * 128  # gated MLP, expansion 3
    assert block.mixer.d_rnn == 172 and block.mixer.rg_lru.c == 8.0 and block.mixer.conv.kernel_size == 4
    assert block.mixer.linear_out.weight.std().item() == pytest.approx(math.sqrt(2 / 2 / 172), rel=0.1)


@pytest.mark.slow
def test_train_hawk_on_copy_learns(tmp_path, monkeypatch):
    """128 steps of a small Hawk: test accuracy 0.40, 0.42, 0.41 (seeds 1, 2, 3; chance is 1/8); 0.42 with
    8 epochs (seed 1). The paper (Sec. 6.2) finds Hawk weak at copying. One intra-op thread, as in test_deltanet."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    results = train(tmp_path / "run", "model=hawk", "task=copy", "model.d_model=32", "model.n_layers=2",
                    "task.seq_len=32", "task.n_copy=4", "task.n_train=2048", "task.n_val=256", "task.n_test=256",
                    "task.batch_size=32", "trainer.max_epochs=2", "optimizer.lr=1e-2", "print_config=false")
    assert results["status"] == "completed"
    assert results["metrics"]["test/acc"] > 0.3
