"""The RTF layer: step() equals forward(), causality, stability constraint, optimizer hints, config, training."""

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from ssmbench.core.fftconv import bidirectional_conv_reference, causal_conv_reference
from ssmbench.core.rtf import companion
from ssmbench.models.rtf import RTFMixer
from ssmbench.optim import param_groups
from tests.compose import composed
from tests.helpers import step_outputs, train


def layer(seed=0, d_model=5, d_state=6, l_max=20, scale=0.3, **options):
    """A float64 layer with random (trained-looking) a and b: the zero init would test nothing."""
    torch.manual_seed(seed)
    m = RTFMixer(d_model, d_state=d_state, l_max=l_max, **options).double()
    with torch.no_grad():
        m.a.copy_(scale * torch.randn_like(m.a) / d_state)
        m.b.copy_(torch.randn_like(m.b))
    return m


@pytest.mark.parametrize("d_state,l_max,L", [(6, 20, 20), (6, 20, 13), (12, 8, 8), (12, 8, 5), (1, 7, 7)])
@pytest.mark.parametrize("stable", [False, True])
def test_step_equals_forward_float64(d_state, l_max, L, stable):
    """step() runs the system whose truncated kernel is the l_max-aliased kernel the convolution uses,
    for N smaller and larger than l_max and inputs up to l_max long."""
    m = layer(d_state=d_state, l_max=l_max, stable=stable, scale=3.0 if stable else 0.3)
    x = torch.randn(3, L, 5, dtype=torch.float64)
    with torch.no_grad():
        y = m(x)
        y_step = step_outputs(m, x, m.initial_state(3, dtype=torch.float64))
    torch.testing.assert_close(y_step, y, rtol=0, atol=1e-10)


def test_step_with_gradients_on_equals_forward():
    m = layer()
    x = torch.randn(2, 20, 5, dtype=torch.float64)
    torch.testing.assert_close(step_outputs(m, x, m.initial_state(2, dtype=torch.float64)), m(x), rtol=0, atol=1e-10)


def test_forward_is_the_convolution_with_the_rtf_kernel_plus_d_skip():
    m = layer(glu=False)
    x = torch.randn(2, 11, 5, dtype=torch.float64)
    K = m.ssm_kernel(11)[0]
    u = x.transpose(1, 2)
    y = causal_conv_reference(u, K) + m.D[:, None] * u
    torch.testing.assert_close(m(x), m.output(F.gelu(y.transpose(1, 2))), rtol=0, atol=1e-12)


def test_bidirectional_adds_the_anticausal_kernel():
    m = layer(bidirectional=True, glu=False)
    assert not m.causal and m.a.shape == (2, 5, 6)
    x = torch.randn(2, 11, 5, dtype=torch.float64)
    K = m.ssm_kernel(11)
    u = x.transpose(1, 2)
    y = bidirectional_conv_reference(u, K[0], K[1]) + m.D[:, None] * u
    torch.testing.assert_close(m(x), m.output(F.gelu(y.transpose(1, 2))), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="bidirectional=false"):
        m.initial_state(1)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_causality(bidirectional):
    m = layer(bidirectional=bidirectional)
    x = torch.randn(1, 20, 5, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 12] += 1.0
    with torch.no_grad():
        changed = (m(x2) - m(x)).abs().amax(-1)[0]
    if bidirectional:
        assert changed[:12].max() > 1e-3
    else:
        assert changed[:12].max() < 1e-12            # FFT round-off only
    assert changed[12] > 1e-3


def test_zero_init_is_the_d_skip_alone():
    """a = b = 0 at init (ruke1ire/RTF zeros_init): the kernel is zero, the layer is GLU(W gelu(D u))."""
    torch.manual_seed(0)
    m = RTFMixer(4, d_state=8, l_max=16)
    assert m.ssm_kernel(16).abs().max() == 0
    x = torch.randn(2, 16, 4)
    torch.testing.assert_close(m(x), F.glu(m.output(F.gelu(m.D * x)), dim=-1))


def test_stable_keeps_the_poles_inside_the_unit_disk():
    """Large raw coefficients: sum |a_i| < 1 after the l1 normalization, so every eigenvalue of the
    companion matrix has modulus < 1; without the constraint the same raw a is unstable."""
    m = layer(stable=True, scale=50.0, d_state=8)
    a = m.denominator()
    assert a.abs().sum(-1).max() < 1
    poles = torch.linalg.eigvals(companion(a, a)[0]).abs()
    assert poles.max() < 1
    raw = torch.linalg.eigvals(companion(m.a.detach(), m.a.detach())[0]).abs()
    assert raw.max() > 1


def test_ssm_lr_none_trains_a_and_b_like_every_weight():
    m = layer()
    groups = {(g["lr"], g["weight_decay"]): set(g["names"]) for g in param_groups(m, lr=0.01, weight_decay=0.1)}
    assert groups == {(0.01, 0.1): {"a", "b", "D", "output.weight"}, (0.01, 0.0): {"output.bias"}}


def test_ssm_lr_gives_a_b_and_the_slack_their_own_lr_and_no_weight_decay():
    m = layer(ssm_lr=1e-3, stable=True)
    groups = {(g["lr"], g["weight_decay"]): set(g["names"]) for g in param_groups(m, lr=0.01, weight_decay=0.1)}
    assert groups[(1e-3, 0.0)] == {"a", "b", "a_slack"}
    assert groups[(0.01, 0.1)] == {"D", "output.weight"}


def test_bad_options_raise_one_line_errors():
    with pytest.raises(ValueError, match="needs l_max"):
        RTFMixer(4, l_max=None)
    with pytest.raises(ValueError, match="d_state=0"):
        RTFMixer(4, d_state=0, l_max=8)
    with pytest.raises(ValueError, match="exceeds l_max=8"):
        RTFMixer(4, d_state=2, l_max=8)(torch.randn(1, 9, 4))


def test_config_builds_the_published_layer():
    with composed("model=rtf", "task=copy") as cfg:
        net = instantiate(cfg.model)
    mixer = net.blocks[0].mixer
    assert isinstance(mixer, RTFMixer) and mixer.causal and net.causal
    assert mixer.d_state == 64 and mixer.l_max == cfg.task.seq_len and not mixer.stable
    assert mixer.a.detach().abs().max() == 0 and mixer.b.detach().abs().max() == 0


@pytest.mark.slow
def test_train_on_copy_learns(tmp_path, monkeypatch):
    """2 epochs of a small model (64 steps each), about 15 s; it reaches 1.00 test accuracy (seeds 1, 2;
    chance is 1/8). One intra-op thread, as tests/test_deltanet.py explains."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    results = train(tmp_path / "run", "model=rtf", "task=copy", "model.d_model=32", "model.n_layers=2",
                    "task.seq_len=32", "task.n_copy=4", "task.n_train=2048", "task.n_val=256", "task.n_test=256",
                    "task.batch_size=32", "trainer.max_epochs=2", "optimizer.lr=3e-3", "print_config=false")
    assert results["status"] == "completed"
    assert results["metrics"]["test/acc"] > 0.8
