"""ssmbench.models.minrnn: g and log g, the log-space forward against a plain loop of the paper's
equations (with and without the short convolution), step() against forward(), the state's dtype,
causality, stability at saturated gates, the configs, and `ssmbench train model=mingru|minlstm task=copy`
learning."""

import math

import pytest
import torch
from hydra.utils import instantiate

from ssmbench.models.minrnn import MinGRUMixer, MinLSTMMixer, g, log_g
from tests.compose import composed
from tests.helpers import step_outputs, train

MIXERS = [MinGRUMixer, MinLSTMMixer]


def causal_conv(x, weight):
    """u_t = sum_j w_j x_{t-K+1+j} per channel (x_t = 0 for t < 0): x (B, L, D), weight (D, 1, K) -> (B, L, D)."""
    size = weight.shape[-1]
    padded = torch.cat([x.new_zeros(x.shape[0], size - 1, x.shape[2]), x], dim=1)
    return sum(weight[:, 0, j] * padded[:, j:j + x.shape[1]] for j in range(size))


def paper_loop(mixer, x):
    """The paper's equations, one step at a time from h = 0, with the mixer's own weights (after the short
    convolution, written out here, when the mixer has one): (B, L, D) -> (B, L, D)."""
    u = x if mixer.conv is None else causal_conv(x, mixer.conv.conv.weight)
    k = mixer.proj(u)
    h = torch.zeros(x.shape[0], mixer.d_hidden, dtype=x.dtype)
    hs = []
    for k_t in k.unbind(1):
        if isinstance(mixer, MinGRUMixer):
            k_z, k_h = k_t.chunk(2, dim=-1)
            z = torch.sigmoid(k_z)
            h = (1 - z) * h + z * g(k_h)
        else:
            k_f, k_i, k_h = k_t.chunk(3, dim=-1)
            f, i = torch.sigmoid(k_f), torch.sigmoid(k_i)
            h = f / (f + i) * h + i / (f + i) * g(k_h)
        hs.append(h)
    h = torch.stack(hs, 1)
    return h if mixer.out is None else mixer.out(h)


def test_g_is_the_papers_activation_and_log_g_its_log():
    x = torch.tensor([-100.0, -3.0, -1e-8, 0.0, 1e-8, 2.0, 50.0], dtype=torch.float64)
    expected = [1 / (1 + math.exp(100)), 1 / (1 + math.exp(3)), 0.5 - 0.25e-8, 0.5, 0.5 + 1e-8, 2.5, 50.5]
    torch.testing.assert_close(g(x), torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=0)
    torch.testing.assert_close(log_g(x), torch.log(g(x)), rtol=1e-12, atol=1e-12)
    assert log_g(torch.tensor([-200.0])).item() == pytest.approx(-200.0)  # log sigmoid(-200): no -inf
    x = torch.linspace(-5, 5, 101, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(log_g(x).sum(), x)
    torch.testing.assert_close(grad, 1 / g(x) * torch.where(x >= 0, 1.0, torch.sigmoid(x) * (1 - torch.sigmoid(x))))


@pytest.mark.parametrize("cls", MIXERS)
@pytest.mark.parametrize("expand, conv", [(1.0, False), (1.5, False), (1.5, True)])
def test_log_space_forward_equals_the_plain_loop_of_the_equations(cls, expand, conv):
    torch.manual_seed(0)
    mixer = cls(d_model=6, expand=expand, use_short_conv=conv, conv_size=3).double()
    assert mixer.d_hidden == round(6 * expand) and (mixer.out is None) == (expand == 1.0)
    assert (mixer.conv is None) != conv and (not conv or (mixer.conv.kernel_size == 3 and not mixer.conv.silu))
    x = 2 * torch.randn(2, 77, 6, dtype=torch.float64)
    torch.testing.assert_close(mixer(x), paper_loop(mixer, x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cls", MIXERS)
@pytest.mark.parametrize("conv", [False, True])
def test_step_equals_parallel_forward(cls, conv):
    torch.manual_seed(1)
    mixer = cls(d_model=8, expand=1.5, use_short_conv=conv).double()
    x = torch.randn(3, 100, 8, dtype=torch.float64)
    state = mixer.initial_state(3, dtype=torch.float64)
    assert set(state) == ({"h", "conv"} if conv else {"h"})
    assert state["h"].shape == (3, 12) and state["h"].dtype == torch.float64 and not state["h"].any()
    if conv:
        assert state["conv"].shape == (3, 8, 3) and state["conv"].dtype == torch.float64 and not state["conv"].any()
    torch.testing.assert_close(step_outputs(mixer, x, state), mixer(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cls", MIXERS)
def test_initial_state_defaults_to_the_parameters_dtype(cls):
    """h in float64 for a float64 module, float32 otherwise (also bfloat16); the convolution's inputs in the
    parameters' dtype."""
    mixer = cls(d_model=4, use_short_conv=True)
    for module_dtype, h_dtype in [(torch.float64, torch.float64), (torch.float32, torch.float32),
                                  (torch.bfloat16, torch.float32)]:
        state = mixer.to(module_dtype).initial_state(2)
        assert state["h"].dtype == h_dtype and state["conv"].dtype == module_dtype, module_dtype
    assert mixer.double().initial_state(2, dtype=torch.float32)["h"].dtype == torch.float32


@pytest.mark.parametrize("cls", MIXERS)
def test_step_equals_forward_at_gates_saturated_to_underflow(cls):
    """Gate pre-activations of exactly +-110 (sigmoid(-110) = 0 in float32, where f / (f + i) would be 0 / 0):
    float32 step() equals the float32 forward() and the float64 loop of the paper's equations."""
    torch.manual_seed(6)
    mixer = cls(d_model=2)
    n_gates = mixer.n_proj - 1
    with torch.no_grad():
        mixer.proj.weight[: 2 * n_gates] = 110 * torch.randint(0, 2, (2 * n_gates, 2)).mul(2).sub(1)
    x = torch.eye(2)[torch.randint(0, 2, (3, 60))]  # one-hot: every gate pre-activation is +110 or -110
    k = mixer.proj(x)
    assert set(k[..., : 2 * n_gates].unique().tolist()) == {-110.0, 110.0}
    if cls is MinLSTMMixer:
        k_f, k_i = k[..., :2], k[..., 2:4]
        assert ((k_f < 0) & (k_i < 0)).any() and (torch.sigmoid(k_f) + torch.sigmoid(k_i) == 0).any()
    with torch.no_grad():
        y_step = step_outputs(mixer, x, mixer.initial_state(3))
        y = mixer(x)
        ref = paper_loop(mixer.double(), x.double())
    assert torch.isfinite(y_step).all()
    torch.testing.assert_close(y_step, y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y_step.double(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", MIXERS)
def test_float32_matches_float64_on_a_long_sequence(cls):
    torch.manual_seed(2)
    mixer = cls(d_model=8, expand=1.5)
    x = torch.randn(2, 5000, 8)
    with torch.no_grad():
        y = mixer(x)
        ref = mixer.double()(x.double())
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", MIXERS)
def test_saturated_gates_stay_finite_and_exact(cls):
    """Pre-activations of +-60: z, f, i saturate (1 - z underflows to 0 in float32 at 17); the log-space
    forward stays finite and equal to the float64 loop, and the gradients stay finite."""
    torch.manual_seed(3)
    mixer = cls(d_model=4).double()
    with torch.no_grad():
        mixer.proj.weight.mul_(60)
    x = torch.randn(2, 200, 4, dtype=torch.float64)
    y = mixer(x)
    torch.testing.assert_close(y, paper_loop(mixer, x), rtol=1e-9, atol=1e-9)
    mixer.float()
    y32 = mixer(x.float())
    y32.sum().backward()
    assert torch.isfinite(y32).all()
    assert all(torch.isfinite(p.grad).all() for p in mixer.parameters())
    torch.testing.assert_close(y32.double(), y, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cls", MIXERS)
def test_causal(cls):
    torch.manual_seed(4)
    mixer = cls(d_model=8, expand=1.5)
    x = torch.randn(2, 50, 8)
    x2 = x.clone()
    x2[:, 30:] += torch.randn(2, 20, 8)
    with torch.no_grad():
        y, y2 = mixer(x), mixer(x2)
    assert mixer.causal
    torch.testing.assert_close(y[:, :30], y2[:, :30], rtol=0, atol=0)
    assert (y[:, 30:] - y2[:, 30:]).abs().min() > 0


@pytest.mark.parametrize("cls", MIXERS)
def test_gradients_reach_every_parameter(cls):
    torch.manual_seed(5)
    mixer = cls(d_model=8, expand=1.5)
    mixer(torch.randn(2, 50, 8)).pow(2).sum().backward()
    for name, p in mixer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_parameter_counts_follow_the_paper():
    """minGRU: 2 d_hidden d_model (Linear_z, Linear_h, no bias), minLSTM: 3 d_hidden d_model; plus d_hidden d_model
    for the output map when d_hidden != d_model, and d_model conv_size for the short convolution (no bias)."""
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(MinGRUMixer(16)) == 2 * 16 * 16
    assert count(MinLSTMMixer(16)) == 3 * 16 * 16
    assert count(MinGRUMixer(16, expand=2)) == 2 * 32 * 16 + 32 * 16
    assert count(MinLSTMMixer(16, expand=2)) == 3 * 32 * 16 + 32 * 16
    assert count(MinGRUMixer(16, use_short_conv=True, conv_size=4)) == 2 * 16 * 16 + 16 * 4


def test_bad_expand_is_a_clear_error():
    with pytest.raises(ValueError, match="mingru: expand=0.01 gives d_hidden = 0"):
        MinGRUMixer(16, expand=0.01)
    with pytest.raises(ValueError, match="minlstm: expand=-1"):
        MinLSTMMixer(16, expand=-1)
    with pytest.raises(ValueError, match="mingru: conv_size=0 must be positive"):
        MinGRUMixer(16, use_short_conv=True, conv_size=0)


@pytest.mark.parametrize("model, cls", [("mingru", MinGRUMixer), ("minlstm", MinLSTMMixer)])
def test_configs_build_the_authors_block(model, cls):
    with composed(f"model={model}", "task=copy") as cfg:
        net = instantiate(cfg.model)
    block = net.blocks[0]
    assert isinstance(block.mixer, cls) and net.causal and len(net.blocks) == 4
    assert block.prenorm and block.norm.kind == "layer" and block.ff is not None
    assert block.ff.inp.out_features == 4 * 128 and block.mixer.d_hidden == 192 and block.mixer.conv is None
    x = torch.randint(0, 10, (2, 64))
    assert net(x).shape == (2, 64, 10)
    with composed(f"model={model}", "task=copy", "model.mixer.use_short_conv=true") as cfg:
        conv = instantiate(cfg.model).blocks[0].mixer.conv
    assert conv.kernel_size == 4 and not conv.silu


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mingru", "minlstm"])
def test_train_on_copy_learns(tmp_path, monkeypatch, model):
    """Recall 2 of 8 symbols after a blank stretch (seq_len 12; chance 1/8) in 2 epochs of 64 steps, one thread:
    measured test accuracy 0.56 / 0.58 (mingru, seeds 1 / 2) and 0.59 / 0.57 (minlstm); 7 s a run (up to 20 s on the
    busy shared 2-core machine, most of it the CLI's start-up)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    result = train(tmp_path / "run", f"model={model}", "task=copy", "task.seq_len=12", "task.n_copy=2",
                   "task.n_train=2048", "task.n_val=256", "task.n_test=256", "task.batch_size=32",
                   "model.d_model=32", "model.n_layers=2", "model.dropout=0.0", "trainer.max_epochs=2",
                   "optimizer.lr=1e-2", "print_config=false")
    assert result["status"] == "completed"
    assert result["metrics"]["test/acc"] > 0.4
