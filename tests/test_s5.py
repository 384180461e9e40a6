"""ssmbench.models.s5: HiPPO-N / block-diagonal / timescale / B and C initialization, discretization against
the matrix exponential, the layer against a dense real SSM and against a plain loop (values and gradients),
step() against forward(), the bidirectional layer, optimizer hints, the config, and learning the copy task."""

import math

import pytest
import torch
from hydra.utils import instantiate

from ssmbench.core.hippo import hippo_normal
from ssmbench.models.s5 import ACTIVATIONS, S5SSM, S5Mixer, TRUNCATED_STD
from ssmbench.optim import param_groups
from tests.compose import composed
from tests.helpers import step_outputs, train

C128 = torch.complex128


def complex_param(p: torch.Tensor) -> torch.Tensor:
    return torch.view_as_complex(p.double().contiguous())


def test_init_is_block_diagonal_hippo_n_with_log_uniform_timescales():
    torch.manual_seed(0)
    ssm = S5SSM(d_model=4, d_state=2048, blocks=16, dt_min=1e-3, dt_max=1e-1)
    Lambda, _ = hippo_normal(128)
    torch.testing.assert_close(ssm.Lambda_re, torch.full((1024,), -0.5))
    torch.testing.assert_close(ssm.Lambda_im, Lambda.imag.float().repeat(16))
    log_dt = ssm.log_step.double()
    assert log_dt.min() >= math.log(1e-3) - 1e-6 and log_dt.max() <= math.log(1e-1) + 1e-6
    # log dt ~ U[log 1e-3, log 1e-1]: Kolmogorov-Smirnov distance below its 1% critical value 1.63 / sqrt(n)
    cdf = ((log_dt - math.log(1e-3)) / math.log(100)).sort().values
    n = cdf.numel()
    ks = torch.maximum(torch.arange(1, n + 1) / n - cdf, cdf - torch.arange(n) / n).max().item()
    assert ks < 1.63 / math.sqrt(n)


def test_B_is_the_eigenbasis_image_of_a_real_lecun_normal_matrix():
    torch.manual_seed(1)
    P, H = 256, 64
    ssm = S5SSM(d_model=H, d_state=P, blocks=4)
    _, V = hippo_normal(P, 4)
    Bt = complex_param(ssm.B)
    B = 2 * (V @ Bt).real                     # B~ = V^* B  <=>  B = 2 Re(V B~) for a real B
    torch.testing.assert_close(V.conj().T @ B.to(C128), Bt, rtol=0, atol=1e-6)
    assert B.var().item() == pytest.approx(1 / P, rel=0.05)
    assert B.abs().max().item() <= 2 / math.sqrt(P) / TRUNCATED_STD + 1e-6


@pytest.mark.parametrize("c_init, mean_square", [("trunc_standard_normal", lambda P, H: 2 / P),
                                                 ("lecun_normal", lambda P, H: 2 / (P * H)),
                                                 ("complex_normal", lambda P, H: 1.0)])
def test_C_init_variances(c_init, mean_square):
    torch.manual_seed(2)
    P, H = 256, 64
    ssm = S5SSM(d_model=H, d_state=P, blocks=8, c_init=c_init, bidirectional=True)
    C = complex_param(ssm.C)
    assert C.shape == (2, H, P // 2)
    assert C.abs().pow(2).mean().item() == pytest.approx(mean_square(P, H), rel=0.05)
    assert (C[0] - C[1]).abs().max() > 0         # two independent draws
    assert ssm.D.var().item() == pytest.approx(1.0, rel=0.5)


def test_zoh_discretization_equals_the_matrix_exponential():
    """exp([[dt Lambda, dt B~], [0, 0]]) = [[Ab, Bb], [0, I]] with a diagonal dt (one timescale per state)."""
    torch.manual_seed(3)
    ssm = S5SSM(d_model=3, d_state=8, blocks=2, step_rescale=1.7).double()
    with torch.no_grad():
        ssm.log_step.copy_(torch.log(torch.tensor([0.01, 0.1, 0.5, 1.0], dtype=torch.float64)))
        ssm.Lambda_re.copy_(torch.tensor([-0.5, -0.1, -2.0, -0.3]))
    Ab, Bb = ssm.discretize(torch.float64)
    dt = 1.7 * torch.exp(ssm.log_step).to(C128)
    Lambda, Bt = torch.complex(ssm.Lambda_re, ssm.Lambda_im), complex_param(ssm.B)
    M = torch.zeros(4 + 3, 4 + 3, dtype=C128)
    M[:4, :4] = torch.diag(dt * Lambda)
    M[:4, 4:] = dt[:, None] * Bt
    E = torch.linalg.matrix_exp(M).detach()
    torch.testing.assert_close(Ab, torch.diagonal(E[:4, :4]), rtol=0, atol=1e-13)
    torch.testing.assert_close(Bb, E[:4, 4:], rtol=0, atol=1e-13)


def test_bilinear_discretization_equals_the_dense_formula():
    torch.manual_seed(4)
    ssm = S5SSM(d_model=3, d_state=8, blocks=1, disc="bilinear").double()
    Ab, Bb = ssm.discretize(torch.float64)
    dt = torch.diag(torch.exp(ssm.log_step).to(C128))
    A = torch.diag(torch.complex(ssm.Lambda_re, ssm.Lambda_im))
    eye = torch.eye(4, dtype=C128)
    Ab_dense = torch.linalg.solve(eye - dt @ A / 2, eye + dt @ A / 2)
    torch.testing.assert_close(Ab, torch.diagonal(Ab_dense), rtol=0, atol=1e-13)
    torch.testing.assert_close(Bb, torch.linalg.solve(eye - dt @ A / 2, dt @ complex_param(ssm.B)), rtol=0, atol=1e-13)


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
@pytest.mark.parametrize("blocks", [1, 2])
def test_layer_equals_the_dense_real_ssm_it_diagonalizes(disc, blocks):
    """With B~ = V^* B, C~ = C V for real B, C and one dt, the conjugate-symmetric diagonal layer computes the
    real P-state system x' = S x + B u, y = C x + D u (S the block-diagonal HiPPO-N), discretized densely."""
    torch.manual_seed(5)
    P, H, dt = 8, 3, 0.3
    ssm = S5SSM(d_model=H, d_state=P, blocks=blocks, disc=disc).double()
    Lambda, V = hippo_normal(P, blocks)
    S = 2 * (V @ torch.diag(Lambda) @ V.conj().T).real
    B, C = torch.randn(P, H, dtype=torch.float64), torch.randn(H, P, dtype=torch.float64)
    with torch.no_grad():                              # the float64 eigenvalues (the init stores float32)
        ssm.Lambda_re.copy_(Lambda.real)
        ssm.Lambda_im.copy_(Lambda.imag)
        ssm.B.copy_(torch.view_as_real(V.conj().T @ B.to(C128)))
        ssm.C.copy_(torch.view_as_real(C.to(C128) @ V)[None])
        ssm.log_step.fill_(math.log(dt))
    eye = torch.eye(P, dtype=torch.float64)
    if disc == "zoh":
        Ab = torch.linalg.matrix_exp(dt * S)
        Bb = torch.linalg.solve(S, (Ab - eye) @ B)
    else:
        Ab = torch.linalg.solve(eye - dt / 2 * S, eye + dt / 2 * S)
        Bb = torch.linalg.solve(eye - dt / 2 * S, dt * B)
    u = torch.randn(2, 37, H, dtype=torch.float64)
    x = torch.zeros(2, P, dtype=torch.float64)
    ys = []
    for u_t in u.unbind(1):
        x = x @ Ab.T + u_t @ Bb.T
        ys.append(x @ C.T + ssm.D.detach() * u_t)
    torch.testing.assert_close(ssm(u).detach(), torch.stack(ys, 1), rtol=1e-10, atol=1e-10)


def loop_reference(ssm: S5SSM, u: torch.Tensor) -> torch.Tensor:
    """The module docstring's equations, written out step by step (float64)."""
    re = ssm.Lambda_re.clamp(max=-1e-4) if ssm.clip_eigs else ssm.Lambda_re
    Lambda = torch.complex(re, ssm.Lambda_im)
    dt = ssm.step_rescale * torch.exp(ssm.log_step)
    Ab = torch.exp(dt * Lambda)
    Bb = ((Ab - 1) / Lambda)[:, None] * complex_param(ssm.B)
    C = complex_param(ssm.C)
    L = u.shape[1]
    ub = u.to(C128)
    x = torch.zeros(u.shape[0], Ab.shape[0], dtype=C128)
    y = [None] * L
    for t in range(L):
        x = Ab * x + ub[:, t] @ Bb.T
        y[t] = 2 * (x @ C[0].T).real + ssm.D * u[:, t]
    if ssm.bidirectional:
        z = torch.zeros_like(x)
        for t in reversed(range(L)):
            z = Ab * z + ub[:, t] @ Bb.T
            y[t] = y[t] + 2 * (z @ C[1].T).real
    return torch.stack(y, 1)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("length", [5, 77])
@pytest.mark.parametrize("clip_eigs", [False, True])
def test_layer_equals_the_plain_loop_values_and_gradients(bidirectional, length, clip_eigs):
    torch.manual_seed(6)
    ssm = S5SSM(d_model=5, d_state=12, blocks=3, bidirectional=bidirectional, clip_eigs=clip_eigs,
                step_rescale=1.3, c_init="complex_normal").double()
    with torch.no_grad():                              # away from the init: signed real parts, varied phases
        ssm.Lambda_re.copy_(torch.tensor([-0.05, -0.7, 0.02, -1.5, -0.3, 0.0]))
        ssm.Lambda_im.add_(torch.randn(6, dtype=torch.float64))
    u = torch.randn(3, length, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, length, 5, dtype=torch.float64)
    params = [u, *ssm.parameters()]
    fast = ssm(u)
    ref = loop_reference(ssm, u)
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-10)
    g_fast = torch.autograd.grad((fast * w).sum(), params)
    g_ref = torch.autograd.grad((ref * w).sum(), params)
    for p, a, b in zip(params, g_fast, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    clipped = g_fast[1][[2, 5]].abs()                   # d/dLambda_re where Re(Lambda) >= -1e-4
    assert (clipped.max() == 0) if clip_eigs else (clipped.min() > 0)
    assert g_fast[1][[0, 1, 3, 4]].abs().min() > 0


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_step_equals_parallel_forward(activation):
    torch.manual_seed(7)
    mixer = S5Mixer(d_model=8, d_state=16, blocks=2, activation=activation, dropout=0.3,
                    tie_dropout=True).double().eval()
    u = torch.randn(3, 100, 8, dtype=torch.float64)
    state = mixer.initial_state(3, dtype=torch.float64)
    assert state.shape == (3, 8) and state.dtype == C128
    torch.testing.assert_close(step_outputs(mixer, u, state), mixer(u), rtol=1e-10, atol=1e-10)


def test_float32_step_equals_parallel_forward():
    torch.manual_seed(8)
    mixer = S5Mixer(d_model=16, d_state=32, blocks=4, disc="bilinear").eval()
    u = torch.randn(2, 120, 16)
    with torch.no_grad():
        torch.testing.assert_close(step_outputs(mixer, u, mixer.initial_state(2)), mixer(u), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activations_follow_s5(activation):
    torch.manual_seed(9)
    mixer = S5Mixer(d_model=6, d_state=8, blocks=1, activation=activation).double()
    u = torch.randn(2, 10, 6, dtype=torch.float64)
    y = mixer.ssm(u)
    z = 0.5 * y * (1 + torch.tanh(math.sqrt(2 / math.pi) * (y + 0.044715 * y**3)))   # flax's nn.gelu
    expected = {
        "gelu": lambda: z,
        "half_glu1": lambda: z * torch.sigmoid(mixer.out(z)),
        "half_glu2": lambda: y * torch.sigmoid(mixer.out(z)),
        "full_glu": lambda: (z @ mixer.out.weight[:6].T + mixer.out.bias[:6])
        * torch.sigmoid(z @ mixer.out.weight[6:].T + mixer.out.bias[6:]),
    }[activation]()
    torch.testing.assert_close(mixer(u), expected, rtol=1e-12, atol=1e-12)
    assert (mixer.out is None) == (activation == "gelu")


@pytest.mark.parametrize("activation, zero_fraction", [("gelu", 0.0), ("half_glu1", 0.5), ("half_glu2", 0.0),
                                                       ("full_glu", 0.0)])
def test_only_the_glu_activations_drop_inside(activation, zero_fraction):
    """S5's gelu branch has one dropout, the backbone's: in train mode the gelu mixer is its eval self; the GLUs
    drop z = gelu(y) inside (half_glu1 multiplies by z, so half its outputs are exact zeros at p = 0.5)."""
    torch.manual_seed(15)
    mixer = S5Mixer(d_model=64, d_state=16, blocks=2, activation=activation, dropout=0.5)
    u = torch.randn(4, 200, 64)
    with torch.no_grad():
        train_out = mixer.train()(u)
        eval_out = mixer.eval()(u)
    assert (train_out == 0).float().mean().item() == pytest.approx(zero_fraction, abs=0.01)
    assert torch.equal(train_out, eval_out) == (activation == "gelu")


@pytest.mark.parametrize("activation", ["full_glu", "half_glu1"])
def test_output_layers_are_lecun_normal_with_zero_bias(activation):
    torch.manual_seed(16)
    H = 256
    out = S5Mixer(d_model=H, d_state=16, blocks=2, activation=activation).out
    assert out.weight.shape[1] == H
    assert out.weight.var().item() == pytest.approx(1 / H, rel=0.05)
    assert out.weight.abs().max().item() <= 2 / math.sqrt(H) / TRUNCATED_STD + 1e-6
    assert torch.equal(out.bias, torch.zeros_like(out.bias))


def test_step_rescale_multiplies_the_timescales():
    torch.manual_seed(10)
    a = S5SSM(d_model=4, d_state=8, blocks=2, step_rescale=2.0).double()
    torch.manual_seed(10)
    b = S5SSM(d_model=4, d_state=8, blocks=2).double()
    with torch.no_grad():
        b.log_step.add_(math.log(2.0))
    for x, y in zip(a.discretize(torch.float64), b.discretize(torch.float64)):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14)


def test_clip_eigs_keeps_the_recurrence_stable():
    ssm = S5SSM(d_model=4, d_state=8, blocks=1, clip_eigs=True)
    with torch.no_grad():
        ssm.Lambda_re.fill_(0.3)
    assert torch.allclose(ssm.lam().real, torch.full((4,), -1e-4))
    assert ssm.discretize()[0].abs().max() < 1
    ssm.clip_eigs = False
    assert ssm.discretize()[0].abs().min() > 1


def test_causal_layer_ignores_the_future_and_bidirectional_does_not():
    torch.manual_seed(11)
    u = torch.randn(2, 40, 8)
    v = u.clone()
    v[:, 30:] += 1.0
    causal = S5Mixer(d_model=8, d_state=16, blocks=2)
    both = S5Mixer(d_model=8, d_state=16, blocks=2, bidirectional=True)
    assert causal.causal and not both.causal
    with torch.no_grad():
        torch.testing.assert_close(causal(u)[:, :30], causal(v)[:, :30], rtol=0, atol=0)
        assert (both(u)[:, :30] - both(v)[:, :30]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="bidirectional layer has no recurrent step"):
        both.step(u[:, 0], both.initial_state(2))


def test_gradients_reach_every_parameter():
    torch.manual_seed(12)
    mixer = S5Mixer(d_model=8, d_state=16, blocks=2, activation="full_glu", bidirectional=True)
    mixer(torch.randn(2, 50, 8)).pow(2).sum().backward()
    for name, p in mixer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_ssm_parameters_get_their_own_lr_and_no_weight_decay():
    mixer = S5Mixer(d_model=8, d_state=16, blocks=2, ssm_lr=0.25e-3, dt_lr=0.5e-3)
    groups = {name: (g["lr"], g["weight_decay"]) for g in param_groups(mixer, 1e-3, 0.05) for name in g["names"]}
    for name in ("ssm.Lambda_re", "ssm.Lambda_im", "ssm.B"):
        assert groups[name] == (0.25e-3, 0.0), name
    assert groups["ssm.log_step"] == (0.5e-3, 0.0)
    assert groups["ssm.C"] == (1e-3, 0.05) and groups["ssm.D"] == (1e-3, 0.05)
    assert groups["out.weight"] == (1e-3, 0.05) and groups["out.bias"] == (1e-3, 0.0)
    default = S5Mixer(d_model=8, d_state=16, blocks=2, ssm_lr=0.25e-3)
    groups = {name: g["lr"] for g in param_groups(default, 1e-3, 0.05) for name in g["names"]}
    assert groups["ssm.log_step"] == 0.25e-3


def test_bfloat16_module_keeps_complex_parameters():
    torch.manual_seed(13)
    mixer = S5Mixer(d_model=8, d_state=16, blocks=2).eval()
    u = torch.randn(2, 30, 8)
    with torch.no_grad():
        y32 = mixer(u)
        y16 = mixer.to(torch.bfloat16)(u.to(torch.bfloat16))
    assert y16.dtype == torch.bfloat16
    assert float((y16.float() - y32).abs().max() / y32.abs().max()) < 5e-2


@pytest.mark.parametrize("options, message", [
    ({"d_state": 12, "blocks": 4}, "d_state=12 must be a positive multiple of 2 x blocks"),
    ({"d_state": 7, "blocks": 1}, "d_state=7"),
    ({"c_init": "xavier"}, "c_init='xavier' is not one of"),
    ({"disc": "euler"}, "disc='euler' is not one of"),
    ({"dt_min": 0.2, "dt_max": 0.1}, "0 < dt_min <= dt_max"),
    ({"step_rescale": 0.0}, "step_rescale=0.0 must be positive"),
    ({"activation": "relu"}, "activation='relu' is not one of"),
])
def test_bad_options_are_clear_errors(options, message):
    with pytest.raises(ValueError, match=message):
        S5Mixer(d_model=8, **{"d_state": 16, "blocks": 2, **options})


def test_config_builds_the_published_layer():
    with composed("model=s5", "task=copy", "optimizer.lr=0.002") as cfg:
        net = instantiate(cfg.model)
    mixer = net.blocks[0].mixer
    ssm = mixer.ssm
    assert isinstance(mixer, S5Mixer) and net.causal and not net.bidirectional and len(net.blocks) == 4
    assert ssm.Lambda_re.shape == (128,) and ssm.B.shape == (128, 128, 2) and ssm.C.shape == (1, 128, 128, 2)
    assert ssm.disc == "zoh" and not ssm.clip_eigs and mixer.activation == "half_glu1"
    assert net.blocks[0].norm.kind == "batch" and net.blocks[0].ff is None and mixer.drop.tied
    torch.testing.assert_close(ssm.Lambda_im[:16].double(), hippo_normal(32)[0].imag, rtol=1e-7, atol=1e-6)
    groups = {name: g["lr"] for g in param_groups(net, 0.002, 0.01) for name in g["names"]}
    assert groups["blocks.0.mixer.ssm.B"] == 0.002 and groups["blocks.0.mixer.ssm.log_step"] == 0.002
    x = torch.randint(0, 10, (2, 64))
    assert net(x).shape == (2, 64, 10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("bidirectional", [False, True])
def test_cuda_matches_cpu(bidirectional):
    torch.manual_seed(14)
    mixer = S5Mixer(d_model=16, d_state=32, blocks=4, bidirectional=bidirectional).eval()
    u = torch.randn(2, 1000, 16)
    with torch.no_grad():
        cpu = mixer(u)
        gpu = mixer.cuda()(u.cuda()).cpu()
    # float32 rounding over 1000 steps (the scan's chunk lengths differ by device)
    torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-4 * cpu.abs().max().item())


@pytest.mark.slow
def test_train_s5_on_copy_learns(tmp_path, monkeypatch):
    """A one-layer S5 recalls 4 symbols after 6 short epochs: test accuracy 0.994 (seed 1), 0.920 (seed 2);
    chance is 1/8. One intra-op thread: a model this small gains nothing from a second one."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    result = train(tmp_path / "run", "model=s5", "task=copy", "task.seq_len=32", "task.n_copy=4",
                   "task.n_train=1024", "task.n_val=128", "task.n_test=256", "model.d_model=32",
                   "model.n_layers=1", "model.mixer.d_state=64", "model.mixer.blocks=2",
                   "trainer.max_epochs=6", "optimizer.lr=1e-2", "print_config=false")
    assert result["status"] == "completed"
    assert result["metrics"]["test/acc"] >= 0.8
