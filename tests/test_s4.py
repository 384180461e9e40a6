"""The S4 / S4D layer: convolution equals recurrence, stability, causality, optimizer hints, configs, CLI."""

import math

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from ssmbench.core.discretize import dplr_matvec
from ssmbench.core.hippo import dplr
from ssmbench.models.s4 import S4Mixer
from ssmbench.optim import param_groups
from tests.compose import composed
from tests.helpers import train

LAYERS = [
    dict(mode="dplr", init="legs"),
    dict(mode="dplr", init="legt"),
    dict(mode="dplr", init="fout"),
    dict(mode="diag", init="legs"),
    dict(mode="diag", init="lin", disc="bilinear"),
    dict(mode="diag", init="inv"),
]


def layer(seed=0, d_model=6, d_state=8, l_max=40, **options):
    torch.manual_seed(seed)
    return S4Mixer(d_model, d_state=d_state, l_max=l_max, **options)


def convolution_and_recurrence(m, x):
    with torch.no_grad():
        y_conv = m(x)
        state, outputs = m.initial_state(x.shape[0], dtype=x.dtype), []
        for t in range(x.shape[1]):
            y_t, state = m.step(x[:, t], state)
            outputs.append(y_t)
    return y_conv, torch.stack(outputs, dim=1)


@pytest.mark.parametrize("options", LAYERS, ids=lambda o: "-".join(o.values()))
def test_convolution_equals_recurrence_float64(options):
    m = layer(**options).to(torch.float64)
    x = torch.randn(3, 37, 6, dtype=torch.float64)
    y_conv, y_rec = convolution_and_recurrence(m, x)
    torch.testing.assert_close(y_rec, y_conv, rtol=0, atol=1e-8)


@pytest.mark.parametrize("options", [dict(mode="dplr", init="legs"), dict(mode="diag", init="inv")])
def test_convolution_equals_recurrence_float32(options):
    m = layer(d_model=8, d_state=64, l_max=64, **options)
    y_conv, y_rec = convolution_and_recurrence(m, torch.randn(2, 64, 8))
    torch.testing.assert_close(y_rec, y_conv, rtol=0, atol=1e-4)


def test_float64_conversion_keeps_complex_parameters():
    m = layer()
    K32 = m.ssm_kernel(40)
    K64 = m.to(torch.float64).ssm_kernel(40)
    assert K64.dtype == torch.float64
    torch.testing.assert_close(K64.float(), K32, rtol=0, atol=1e-5)


@pytest.mark.parametrize("options", LAYERS, ids=lambda o: "-".join(o.values()))
def test_eigenvalues_stay_in_the_left_half_plane(options):
    m = layer(**options)
    assert (m.eigenvalues().real < 0).all()
    with torch.no_grad():
        m.log_neg_real.fill_(-30.0)        # whatever the optimizer does, Re(Lambda) = -exp(.) < 0
    assert (m.eigenvalues().real < 0).all()


def test_kernel_is_causal_and_shorter_inputs_use_its_prefix():
    m = layer()
    x = torch.randn(2, 40, 6)
    y = m(x)
    x2 = x.clone()
    x2[:, 25:] += 1.0
    torch.testing.assert_close(m(x2)[:, :25], y[:, :25])
    torch.testing.assert_close(m(x[:, :17]), y[:, :17])
    assert m.causal


def test_bidirectional_layer_sees_the_future_and_has_no_step():
    m = layer(bidirectional=True)
    assert not m.causal and m.C.shape[0] == 2
    x = torch.randn(2, 30, 6)
    x2 = x.clone()
    x2[:, 20:] += 1.0
    assert (m(x2)[:, :20] - m(x)[:, :20]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="bidirectional layer has no recurrent step"):
        m.initial_state(2)


def test_ssm_parameters_get_their_own_lr_and_no_weight_decay():
    m = layer(ssm_lr=1e-3)
    groups = {(g["lr"], g["weight_decay"]): set(g["names"]) for g in param_groups(m, lr=0.01, weight_decay=0.1)}
    assert groups[(1e-3, 0.0)] == {"log_neg_real", "imag", "B_ri", "P_ri", "log_dt"}
    assert groups[(0.01, 0.1)] == {"C_ri", "D", "output.weight"}
    assert groups[(0.01, 0.0)] == {"output.bias"}


def test_dt_lr_gives_dt_its_own_learning_rate():
    m = layer(ssm_lr=1e-3, dt_lr=0.01)
    groups = {(g["lr"], g["weight_decay"]): set(g["names"]) for g in param_groups(m, lr=0.01, weight_decay=0.1)}
    assert groups[(1e-3, 0.0)] == {"log_neg_real", "imag", "B_ri", "P_ri"}
    assert groups[(0.01, 0.0)] == {"log_dt", "output.bias"}      # the base lr, still without weight decay


@pytest.mark.parametrize("mode", ["dplr", "diag"])
def test_n_ssm_shares_the_systems_between_channel_groups(mode):
    """Channel h uses system h mod n_ssm (the release's tiling); dt and C stay per channel."""
    m = layer(d_model=6, mode=mode, init="legs", n_ssm=2).double()
    assert m.log_neg_real.shape == (2, 4) and m.B_ri.shape == (2, 4, 2) and m.log_dt.shape == (6,)
    Lambda, B = m.eigenvalues(), m.B
    for h in range(6):
        torch.testing.assert_close(Lambda[h], Lambda[h % 2], rtol=0, atol=0)
        torch.testing.assert_close(B[h], B[h % 2], rtol=0, atol=0)
    if mode == "dplr":
        assert m.P_ri.shape == (2, 1, 4, 2) and m.P.shape == (6, 1, 4)
    with torch.no_grad():                          # training moves a shared system for all of its channels
        m.imag[1].add_(0.5)
    assert torch.equal(m.eigenvalues()[5], m.eigenvalues()[1]) and not torch.equal(m.eigenvalues()[5], Lambda[5])
    x = torch.randn(2, 23, 6, dtype=torch.float64)
    y_conv, y_rec = convolution_and_recurrence(m, x)
    torch.testing.assert_close(y_rec, y_conv, rtol=0, atol=1e-8)


def test_n_ssm_equal_to_d_model_is_the_default_layer():
    a, b = layer(seed=3), layer(seed=3, n_ssm=6)
    assert a.state_dict().keys() == b.state_dict().keys()
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_softplus_dt_transform_starts_from_the_same_steps():
    """Same seed: the same log-uniform dt, stored as log dt (exp) or softplus^-1(dt) (softplus)."""
    e, s = layer(seed=5).double(), layer(seed=5, dt_transform="softplus").double()
    assert not hasattr(s, "log_dt") and s.softplus_inv_dt.shape == (6,)
    torch.testing.assert_close(s.dt(), e.dt(), rtol=1e-6, atol=0)
    torch.testing.assert_close(F.softplus(s.softplus_inv_dt), e.log_dt.exp(), rtol=1e-6, atol=0)
    torch.testing.assert_close(s.ssm_kernel(40), e.ssm_kernel(40), rtol=1e-4, atol=1e-7)  # float32-stored dt
    x = torch.randn(2, 19, 6, dtype=torch.float64)
    y_conv, y_rec = convolution_and_recurrence(s, x)
    torch.testing.assert_close(y_rec, y_conv, rtol=0, atol=1e-8)
    s.softplus_inv_dt.detach().fill_(-40.0)       # softplus keeps dt > 0 for any parameter value
    assert (s.dt() > 0).all()


def test_glu_false_is_the_ungated_layer():
    m = layer(seed=1, glu=False).double()
    x = torch.randn(2, 15, 6, dtype=torch.float64)
    with torch.no_grad():
        z = F.gelu(_ssm_output(m, x))
        torch.testing.assert_close(m(x), z @ m.output.weight.T + m.output.bias)
    assert m.output.weight.shape == (6, 6)
    y_conv, y_rec = convolution_and_recurrence(m, x)
    torch.testing.assert_close(y_rec, y_conv, rtol=0, atol=1e-8)


def _ssm_output(m, x):
    """y = K * u + D u of the layer's SSM, by the recurrence written out (before GELU and the output map)."""
    rec = m.recurrence()
    state, ys = m.initial_state(x.shape[0], dtype=x.dtype), []
    for t in range(x.shape[1]):
        u = x[:, t].to(rec["Bb"].real.dtype)
        state = dplr_matvec(rec["A1"], dplr_matvec(rec["A0"], state)) + rec["Bb"] * u[..., None]
        ys.append((rec["C"] * state).sum(-1).real + m.D * u)
    return torch.stack(ys, 1)


def test_tie_dropout_reaches_the_layer_from_the_model_config():
    with composed("model=s4", "task=copy", "model.tie_dropout=true", "model.mixer.dropout=0.1") as cfg:
        net = instantiate(cfg.model)
    mixer = net.blocks[0].mixer
    assert mixer.dropout.tied and mixer.dropout.p == 0.1 and net.blocks[0].drop.tied


def test_diagonal_inits_equal_the_s4d_closed_forms():
    """S4D-Lin: Lambda_n = -1/2 + i pi n; S4D-Inv: Lambda_n = -1/2 + i N/pi (N/(2n+1) - 1); both B_n = 1
    (n < N/2); S4D-LegS: the diagonal part of DPLR-LegS with B = V^* B. Every channel starts there."""
    N, H = 16, 3
    closed = {
        "lin": [complex(-0.5, math.pi * n) for n in range(N // 2)],
        "inv": [complex(-0.5, N / math.pi * (N / (2 * n + 1) - 1)) for n in range(N // 2)],
    }
    legs_Lambda, _, legs_B, _ = dplr("legs", N)
    for init in ("lin", "inv", "legs"):
        m = layer(d_model=H, d_state=N, mode="diag", init=init).double()
        Lambda = torch.tensor(closed[init], dtype=torch.complex128) if init in closed else legs_Lambda
        B = torch.ones(N // 2, dtype=torch.complex128) if init in closed else legs_B
        torch.testing.assert_close(m.eigenvalues(), Lambda.expand(H, -1), rtol=1e-6, atol=1e-5)
        torch.testing.assert_close(m.B, B.expand(H, -1), rtol=1e-6, atol=1e-6)


def test_dt_is_log_uniform_in_range():
    m = layer(d_model=2000, dt_min=1e-3, dt_max=1e-1)
    dt = m.log_dt.exp()
    assert dt.min() >= 1e-3 and dt.max() <= 1e-1
    assert abs(float(m.log_dt.detach().mean()) - (-4.605)) < 0.1     # mean of U(log 1e-3, log 1e-1)


def test_input_longer_than_l_max_is_an_error():
    with pytest.raises(ValueError, match="exceeds l_max=40"):
        layer()(torch.randn(1, 41, 6))


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(mode="ssm"), "mode='ssm'"),
        (dict(init="lin"), "init=lin has no low-rank term"),
        (dict(d_state=7), "positive even number"),
        (dict(l_max=None), "needs l_max"),
        (dict(disc="zoh"), "bilinear discretization"),
        (dict(mode="diag", disc="euler"), "disc='euler'"),
        (dict(dt_transform="relu"), "dt_transform='relu'"),
        (dict(n_ssm=4), "n_ssm=4 must divide d_model=6"),
        (dict(n_ssm=0), "n_ssm=0 must divide"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        layer(**options)


@pytest.mark.parametrize("model, mode", [("s4", "dplr"), ("s4d", "diag")])
def test_configs_build_the_published_layer(model, mode):
    with composed(f"model={model}", "task=copy") as cfg:
        net = instantiate(cfg.model)
    mixer = net.blocks[0].mixer
    assert isinstance(mixer, S4Mixer) and mixer.mode == mode and net.causal
    assert mixer.d_state == 64 and mixer.l_max == cfg.task.seq_len and not net.bidirectional


@pytest.mark.slow
def test_cli_s4_learns_the_copy_task(tmp_path):
    result = train(tmp_path / "run", "model=s4", "task=copy", "task.n_train=2048", "task.n_val=256",
                   "task.n_test=256", "trainer.max_epochs=3", "optimizer.lr=0.003")
    assert result["status"] == "completed"
    assert result["metrics"]["test/acc"] > 0.6          # chance is 1/8
