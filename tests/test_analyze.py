"""`ssmbench analyze`: the numbers against layers whose spectra are set by hand, the per-step decays
against direct computations, and one end-to-end run of the command on a tiny trained run."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from ssmbench.analyze.command import analyze, find_checkpoint
from ssmbench.analyze.report import finite_json
from ssmbench.analyze.spectra import (decay_numbers, delta_rule_numbers, fixed_points, gramian_numbers, gramians,
                                      jacobian_numbers, layer_numbers, reciprocal_roots, timescale_summary,
                                      timescales)
from ssmbench.errors import UserError
from ssmbench.models.gated_deltanet import GatedDeltaNetMixer
from ssmbench.models.hawk import HawkMixer
from ssmbench.models.lru import LRUMixer
from ssmbench.models.mamba import MambaMixer
from ssmbench.models.mamba2 import Mamba2Mixer
from ssmbench.models.minrnn import MinGRUMixer, MinLSTMMixer
from ssmbench.models.nrnn import NewtonRNNMixer
from ssmbench.models.rtf import RTFMixer
from ssmbench.models.s4 import S4Mixer
from ssmbench.models.s5 import S5Mixer
from tests.helpers import REPO_ROOT, run_cli, train


def test_timescale_formula():
    m = torch.tensor([0.0, math.exp(-1), math.exp(-0.1), 1.0, 1.5])
    tau = timescales(m)
    torch.testing.assert_close(tau[:3], torch.tensor([0.0, 1.0, 10.0], dtype=torch.float64), rtol=1e-6, atol=0)
    assert tau[3] == math.inf and tau[4] == math.inf
    s = timescale_summary(torch.tensor([math.exp(-1 / 2), math.exp(-1 / 8), math.exp(-1 / 200)], dtype=torch.float64), 100)
    assert s["tau_min"] == pytest.approx(2) and s["tau_median"] == pytest.approx(8) and s["tau_max"] == pytest.approx(200)
    assert s["frac_above_0.99"] == pytest.approx(1 / 3) and s["frac_tau_ge_seq_len"] == pytest.approx(1 / 3)
    assert sum(s["tau_histogram"]["counts"]) == 3


def test_lru_eigenvalues_set_by_hand():
    mixer = LRUMixer(4, d_state=3).double()
    r, theta = torch.tensor([0.5, 0.9, 0.999], dtype=torch.float64), torch.tensor([0.1, 1.0, 3.0], dtype=torch.float64)
    with torch.no_grad():
        mixer.lru.nu_log.copy_(torch.log(-torch.log(r)))
        mixer.lru.theta_log.copy_(torch.log(theta))
    lam = mixer.discrete_eigenvalues()
    torch.testing.assert_close(lam, torch.polar(r, theta)[None])
    lti = layer_numbers(mixer, torch.randn(2, 5, 4, dtype=torch.float64), seq_len=100)["lti"]
    assert lti["tau_min"] == pytest.approx(-1 / math.log(0.5))
    assert lti["tau_median"] == pytest.approx(-1 / math.log(0.9))
    assert lti["tau_max"] == pytest.approx(-1 / math.log(0.999))
    assert lti["frac_above_0.99"] == pytest.approx(1 / 3)
    assert lti["eigenvalues"][0][2] == pytest.approx([0.999 * math.cos(3.0), 0.999 * math.sin(3.0)])


def test_s4d_eigenvalues_are_exp_dt_lambda():
    mixer = S4Mixer(2, d_state=4, mode="diag", init="lin").double()
    Lambda = torch.tensor([[-0.5 + 1j, -2.0 + 3j], [-0.1 + 0j, -1.0 + 0.5j]], dtype=torch.complex128)
    dt = torch.tensor([0.1, 0.01], dtype=torch.float64)
    with torch.no_grad():
        mixer.log_neg_real.copy_(torch.log(-Lambda.real))
        mixer.imag.copy_(Lambda.imag)
        mixer.log_dt.copy_(torch.log(dt))
    expected = torch.exp(dt[:, None] * Lambda)
    torch.testing.assert_close(mixer.discrete_eigenvalues(), torch.cat([expected, expected.conj()], -1))
    lti = layer_numbers(mixer, torch.randn(1, 8, 2, dtype=torch.float64), seq_len=8)["lti"]
    assert lti["tau_max"] == pytest.approx(1 / (0.01 * 0.1))     # channel 1, Re Lambda = -0.1, dt = 0.01
    assert len(lti["kernel"]) == 2 and len(lti["kernel"][0]) == 8
    torch.testing.assert_close(torch.tensor(lti["kernel"], dtype=torch.float64), mixer.ssm_kernel(8)[0])


def test_s4_dplr_eigenvalues_are_those_of_the_dense_bilinear_matrix():
    torch.manual_seed(0)
    mixer = S4Mixer(2, d_state=6, mode="dplr", l_max=16).double()
    Lambda, P, dt = mixer.eigenvalues(), mixer.P, mixer.dt()
    full_lambda = torch.cat([Lambda, Lambda.conj()], -1)
    full_p = torch.cat([P, P.conj()], -1)
    A = torch.diag_embed(full_lambda) - full_p.mT @ full_p.conj()
    eye = torch.eye(6, dtype=A.dtype)
    Ab = torch.linalg.solve(eye - dt[:, None, None] / 2 * A, eye + dt[:, None, None] / 2 * A)
    expected, got = torch.linalg.eigvals(Ab), mixer.discrete_eigenvalues()
    assert got.shape == (2, 6)
    torch.testing.assert_close(got.abs().sort(-1).values, expected.abs().sort(-1).values)
    torch.testing.assert_close(got.real.sort(-1).values, expected.real.sort(-1).values)


def test_rtf_poles_are_reciprocal_roots_of_a():
    mixer = RTFMixer(1, d_state=2, l_max=8).double()
    p1, p2 = 0.9, -0.5      # a(z) = (1 - p1 z)(1 - p2 z) = 1 - (p1 + p2) z + p1 p2 z^2
    with torch.no_grad():
        mixer.a.copy_(torch.tensor([[[-(p1 + p2), p1 * p2]]]))
    poles = mixer.discrete_eigenvalues()
    torch.testing.assert_close(poles.real.sort(-1).values, torch.tensor([[p2, p1]], dtype=torch.float64))
    torch.testing.assert_close(poles.imag, torch.zeros(1, 2, dtype=torch.float64))
    assert layer_numbers(mixer, torch.randn(1, 8, 1, dtype=torch.float64), 8)["lti"]["tau_max"] == \
        pytest.approx(-1 / math.log(0.9))


def test_s5_eigenvalues_are_the_discretized_lambda():
    mixer = S5Mixer(4, d_state=4, blocks=1).double()
    Ab = mixer.ssm.discretize(torch.float64)[0]
    dt = torch.exp(mixer.ssm.log_step.double())
    torch.testing.assert_close(Ab, torch.exp(dt * mixer.ssm.lam(torch.float64)))
    torch.testing.assert_close(mixer.discrete_eigenvalues(), torch.cat([Ab, Ab.conj()])[None])


def _direct_decays(mixer, u):
    """The per-step decays computed from the papers' formulas with the layer's weights."""
    if isinstance(mixer, MambaMixer):
        x = mixer.conv(mixer.in_proj(u)[..., :mixer.d_inner])
        dt = mixer.x_proj(x)[..., :mixer.dt_rank]
        delta = F.softplus(mixer.dt_proj(dt))
        return torch.exp(-delta[..., None] * torch.exp(mixer.A_log)).flatten(-2)
    if isinstance(mixer, Mamba2Mixer):
        dt = mixer.in_proj(u)[..., -mixer.num_heads:]
        return torch.exp(-F.softplus(dt + mixer.dt_bias) * torch.exp(mixer.A_log))
    if isinstance(mixer, GatedDeltaNetMixer):
        return torch.exp(-torch.exp(mixer.A_log) * F.softplus(mixer.a_proj(u) + mixer.dt_bias))
    if isinstance(mixer, HawkMixer):
        x = mixer.conv(mixer.linear_x(u))
        r = torch.sigmoid(mixer.rg_lru.a_gate(x))
        return torch.exp(-mixer.rg_lru.c * F.softplus(mixer.rg_lru.Lambda) * r)
    if isinstance(mixer, MinGRUMixer):
        k_z = mixer.proj(u)[..., :mixer.d_hidden]
        return 1 - torch.sigmoid(k_z)
    k_f, k_i = mixer.proj(u)[..., :mixer.d_hidden], mixer.proj(u)[..., mixer.d_hidden:2 * mixer.d_hidden]
    f, i = torch.sigmoid(k_f), torch.sigmoid(k_i)
    return f / (f + i)


@pytest.mark.parametrize("make", [
    lambda: MambaMixer(8, d_state=4), lambda: Mamba2Mixer(8, d_state=4, headdim=4),
    lambda: GatedDeltaNetMixer(8, num_heads=2), lambda: HawkMixer(8, num_heads=2),
    lambda: MinGRUMixer(8), lambda: MinLSTMMixer(8)], ids=["mamba", "mamba2", "gdn", "hawk", "mingru", "minlstm"])
def test_decays_lie_in_0_1_and_equal_the_direct_computation(make):
    torch.manual_seed(0)
    mixer = make().double()
    u = torch.randn(2, 7, 8, dtype=torch.float64)
    d = mixer.decays(u)
    assert d.shape[:2] == (2, 7)
    assert (d > 0).all() and (d <= 1).all()
    torch.testing.assert_close(d, _direct_decays(mixer, u))
    numbers = layer_numbers(mixer, u, seq_len=7)["decays"]
    assert numbers["decay_quantiles"]["q0"] == pytest.approx(d.min().item())
    assert numbers["decay_quantiles"]["q1"] == pytest.approx(d.max().item())
    assert numbers["tau_max"] == pytest.approx(-1 / math.log(d.max().item()))


def test_decay_numbers_of_known_decays():
    d = torch.exp(-1 / torch.tensor([1.0, 10.0, 1000.0], dtype=torch.float64)).reshape(1, 3, 1)
    n = decay_numbers(d, seq_len=50)
    assert n["tau_quantiles"]["q0.5"] == pytest.approx(10.0)
    assert n["frac_tau_ge_seq_len"] == pytest.approx(1 / 3)
    assert sum(n["decay_histogram"]["counts"]) == 3


def test_delta_rule_eigenvalue_range():
    torch.manual_seed(0)
    mixer = GatedDeltaNetMixer(8, num_heads=2, beta_range=[0, 2]).double()
    u = torch.randn(2, 5, 8, dtype=torch.float64)
    beta = mixer.betas(u)
    assert beta.shape == (2, 5, 2) and (beta >= 0).all() and (beta <= 2).all()
    k = F.normalize(torch.randn(4, dtype=torch.float64), dim=0)
    b = beta.max()
    eig = torch.linalg.eigvalsh(torch.eye(4, dtype=torch.float64) - b * torch.outer(k, k))
    numbers = layer_numbers(mixer, u, seq_len=5)["delta_rule"]
    assert numbers["transition_eig_min"] == pytest.approx(eig.min().item())
    assert numbers == delta_rule_numbers(beta)


def test_jacobian_norm_and_radius():
    J = torch.tensor([[[[0.5, 1.0], [0.0, 0.5]], [[0.3, 0.0], [0.0, -0.2]]]], dtype=torch.float64)
    n = jacobian_numbers(J)
    assert n["jacobian_radius_quantiles"]["q1"] == pytest.approx(0.5)
    assert n["jacobian_norm_quantiles"]["q1"] == pytest.approx(torch.linalg.matrix_norm(J[0, 0], ord=2).item())
    assert n["jacobian_norm_quantiles"]["q0"] == pytest.approx(0.3)
    assert n["frac_contractive"] == pytest.approx(0.5)    # the non-normal one has norm > 1 though radius 0.5


@pytest.mark.parametrize("cell", ["gru", "diag_gru", "elman"])
def test_nrnn_cell_jacobians_match_autograd(cell):
    torch.manual_seed(0)
    mixer = NewtonRNNMixer(3, cell=cell, d_state=4, jacobian="none").double()
    x = torch.randn(2, 3, 3, dtype=torch.float64)
    J = mixer.cell_jacobians(x)
    assert J.shape == (2, 3, 4, 4)
    u = mixer.cell.drive(x)
    h = torch.zeros(4, dtype=torch.float64)
    for t in range(3):
        expected = torch.autograd.functional.jacobian(lambda h_: mixer.cell.recurrence(h_, u[1, t]), h)
        torch.testing.assert_close(J[1, t], expected)
        h = mixer.cell.recurrence(h, u[1, t]).detach()
    assert "jacobian" in layer_numbers(mixer, x, seq_len=3)


def test_infinite_values_become_json_strings():
    assert finite_json({"a": [math.inf, 1.0, float("nan")], "b": -math.inf}) == {"a": ["inf", 1.0, None], "b": "-inf"}


def test_missing_run_and_missing_checkpoint_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        find_checkpoint(str(tmp_path / "nope"))
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(UserError, match="no checkpoint in"):
        analyze([str(tmp_path / "run")])
    with pytest.raises(UserError, match="--batches 0"):
        analyze([str(tmp_path / "run"), "--batches", "0"])


@pytest.mark.slow
def test_analyze_a_trained_lru_run(tmp_path, monkeypatch):
    """Trains lru on copy for 5 steps, then `ssmbench analyze <run> --out X --at-init`."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run = tmp_path / "run"
    train(run, "model=lru", "task=copy", "trainer=cpu", "trainer.max_epochs=1", "+trainer.limit_train_batches=5",
          "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1", "model.d_model=16", "model.n_layers=2",
          "task.n_train=320", "task.n_val=64", "task.n_test=64")
    out = tmp_path / "analysis"
    proc = run_cli("analyze", str(run), "--out", str(out), "--at-init", cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LRUMixer" in proc.stdout and "tau median" in proc.stdout
    results = json.loads((out / "analysis.json").read_text())
    assert results["model"] == "lru" and results["task"] == "copy" and results["seq_len"] == 64
    assert set(results["states"]) == {"trained", "init"}
    for layers in results["states"].values():
        assert [layer["layer"] for layer in layers] == [0, 1]
        lti = layers[0]["lti"]
        assert {"eigenvalues", "tau_min", "tau_median", "tau_max", "frac_above_0.99", "tau_histogram"} <= set(lti)
        assert len(lti["eigenvalues"][0]) == 256 and 0 < lti["modulus_max"] < 1
        assert lti["gramians"]["n_states"] == 512 and 0 < lti["gramians"]["controllability_rank"][0] <= 512
    init, trained = (results["states"][s][0]["lti"]["eigenvalues"] for s in ("init", "trained"))
    assert init != trained
    assert set(results["figures"]["files"]) == {"eigenvalues.png", "timescales.png"}
    for name in results["figures"]["files"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run_cli("analyze", str(tmp_path / "absent")).returncode == 2


def _truncated_gramians(lam, B, C, lags=2000):
    """sum_{l < lags} Ab^l B B^* (Ab^*)^l and sum_l (Ab^*)^l C^* C Ab^l, Ab = diag(lambda), term by term."""
    W_c, W_o = 0, 0
    for l in range(lags):
        Ab = torch.diag_embed(lam**l)
        W_c = W_c + Ab @ B @ B.mH @ Ab.mH
        W_o = W_o + Ab.mH @ C.mH @ C @ Ab
    return W_c, W_o


def _small_system():
    """lambda (1, 4) with distinct eigenvalues, B (1, 4, 3), C (1, 2, 4) random: controllable and observable."""
    g = torch.Generator().manual_seed(1)
    lam = torch.tensor([[0.9, 0.5 + 0.3j, 0.5 - 0.3j, -0.7]], dtype=torch.complex128)
    B = torch.randn(1, 4, 3, dtype=torch.complex128, generator=g)
    C = torch.randn(1, 2, 4, dtype=torch.complex128, generator=g)
    return lam, B, C


def test_gramians_equal_the_truncated_sums():
    lam, B, C = _small_system()
    W_c, W_o = gramians(lam, B, C)
    expected_c, expected_o = _truncated_gramians(lam[0], B[0], C[0])
    torch.testing.assert_close(W_c[0], expected_c, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(W_o[0], expected_o, rtol=1e-10, atol=1e-12)
    n = gramian_numbers(lam, B, C)
    assert n["controllability_rank"] == [4] and n["observability_rank"] == [4] and n["n_states"] == 4
    for name, W in (("controllability_cond", expected_c), ("observability_cond", expected_o)):
        s = torch.linalg.svdvals(W)
        assert n[name][0] == pytest.approx((s[0] / s[-1]).item(), rel=1e-6)
    hankel = torch.linalg.eigvals(expected_c @ expected_o).abs().sqrt()
    assert n["hankel_max"][0] == pytest.approx(hankel.max().item(), rel=1e-8)
    assert n["hankel_min"][0] == pytest.approx(hankel.min().item(), rel=1e-6)


@pytest.mark.parametrize("unused", [0, 1, 3])
def test_states_the_input_does_not_reach_or_the_output_does_not_see_reduce_the_rank(unused):
    """A diagonal system reaches state i iff row i of B is nonzero, sees it iff column i of C is."""
    lam, B, C = _small_system()
    B[:, 4 - unused:] = 0
    C[:, :, :unused] = 0
    n = gramian_numbers(lam, B, C)
    assert n["controllability_rank"] == [4 - unused] and n["observability_rank"] == [4 - unused]
    assert (n["controllability_cond"][0] == math.inf or n["controllability_cond"][0] > 1e12) == (unused > 0)
    if unused == 3:    # states 0 (only reached) and 3 (only seen): nothing passes from input to output
        assert n["hankel_max"][0] < 1e-6


def test_repeated_eigenvalue_with_proportional_b_rows_is_one_state():
    """Two states with the same lambda driven by B rows b and 2b move together: rank 3 of 4."""
    lam, B, C = _small_system()
    lam[0, 1] = lam[0, 0]
    B[0, 1] = 2 * B[0, 0]
    assert gramian_numbers(lam, B, C)["controllability_rank"] == [3]


def test_unstable_system_has_no_gramian_numbers():
    lam, B, C = _small_system()
    B[:, 2:] = 0
    lam2 = torch.cat([lam, lam * torch.tensor([1, 1, 1, 1.5])])
    n = gramian_numbers(lam2, B.expand(2, -1, -1), C.expand(2, -1, -1))
    assert n["controllability_rank"][0] == 2 and math.isnan(n["controllability_rank"][1])


@pytest.mark.parametrize("make", [lambda: LRUMixer(3, d_state=2), lambda: S4Mixer(3, d_state=4, mode="diag"),
                                  lambda: S5Mixer(3, d_state=4, blocks=1)], ids=["lru", "s4d", "s5"])
def test_state_space_realizes_the_layer(make):
    """The impulse response C lambda^l B of state_space() equals the layer's own (its kernel, or its
    response to a unit impulse in one input channel with D set to 0)."""
    torch.manual_seed(0)
    mixer = make().double()
    lam, B, C = mixer.state_space()
    L = 6
    powers = lam[:, None, :] ** torch.arange(L, dtype=torch.float64)[:, None]       # (S, L, N)
    response = torch.einsum("son,sln,sni->sloi", C, powers, B)     # (S, L, H_out, H_in)
    assert response.imag.abs().max() < 1e-12
    if isinstance(mixer, S4Mixer):
        torch.testing.assert_close(response.real[:, :, 0, 0], mixer.kernel(L))
        return
    ssm = mixer.lru if isinstance(mixer, LRUMixer) else mixer.ssm
    with torch.no_grad():
        ssm.D.zero_()
    u = torch.zeros(1, L, 3, dtype=torch.float64)
    u[0, 0, 1] = 1.0
    torch.testing.assert_close(ssm(u)[0], response.real[0, :, :, 1])
    assert len(layer_numbers(mixer, u, L)["lti"]["gramians"]["controllability_rank"]) == 1


def test_s4_dplr_has_no_diagonal_state_space():
    assert S4Mixer(2, d_state=4, mode="dplr", l_max=8).state_space() is None
    assert "gramians" not in layer_numbers(S4Mixer(2, d_state=4, mode="dplr", l_max=8).double(),
                                           torch.randn(1, 8, 2, dtype=torch.float64), 8)["lti"]


def test_rtf_zeros_are_reciprocal_roots_of_b_sys():
    """With a = 0 every pole is at 0, A^l_max = 0 and b_sys = b: b(z) = z (1 - 0.5 z)(1 + 0.8 z) has the
    zeros 0.5 and -0.8 (reciprocal roots, as the poles); a leading b_1 = 0 is a zero at infinity."""
    mixer = RTFMixer(2, d_state=3, l_max=8).double()
    with torch.no_grad():
        mixer.b.copy_(torch.tensor([[[1.0, 0.3, -0.4], [0.0, 2.0, -1.0]]]))
    zeros = reciprocal_roots(mixer.numerator())
    torch.testing.assert_close(zeros[0].real.sort().values, torch.tensor([-0.8, 0.5], dtype=torch.float64))
    torch.testing.assert_close(zeros[0].imag, torch.zeros(2, dtype=torch.float64))
    assert zeros[1, 0] == 0.5 and math.isinf(zeros[1, 1].real)
    lti = layer_numbers(mixer, torch.randn(1, 8, 2, dtype=torch.float64), 8)["lti"]
    assert sorted(p[0] for p in lti["zeros"][0]) == pytest.approx([-0.8, 0.5])
    assert lti["zeros"][1][1][0] == math.inf


def test_rtf_numerator_is_the_stepped_system():
    """With nonzero a, b_sys differs from b: its kernel (companion realization) is the layer's kernel."""
    torch.manual_seed(0)
    mixer = RTFMixer(1, d_state=2, l_max=6).double()
    with torch.no_grad():
        mixer.a.copy_(torch.tensor([[[-0.5, 0.06]]]))
        mixer.b.copy_(torch.tensor([[[1.0, 0.7]]]))
    b_sys = mixer.numerator()
    assert not torch.allclose(b_sys, mixer.b[0])
    K, w = [], torch.zeros(2, dtype=torch.float64)
    for t in range(6):
        w = torch.cat([(float(t == 0) - (mixer.a[0, 0] * w).sum())[None], w[:1]])
        K.append((b_sys[0] * w).sum())
    torch.testing.assert_close(torch.stack(K), mixer.kernel(6)[0])
    assert torch.isnan(reciprocal_roots(torch.zeros(1, 3))).all()


def _elman(weight):
    mixer = NewtonRNNMixer(3, cell="elman", d_state=2, jacobian="none").double()
    with torch.no_grad():
        mixer.cell.recurrence.weight.copy_(weight[None])
        mixer.cell.drive.bias.zero_()
    return mixer


def test_elman_zero_bias_contractive_fixed_point_is_zero():
    """h = tanh(W h): h* = 0, Jacobian tanh'(0) W = W with spectral radius 0.8; every start reaches it."""
    W = torch.tensor([[0.0, 0.8], [-0.8, 0.0]], dtype=torch.float64) @ torch.tensor([[1.0, 0.5], [0.0, 1.0]]).double()
    W = W * 0.8 / torch.linalg.eigvals(W).abs().max()
    n = layer_numbers(_elman(W), torch.randn(1, 3, 3, dtype=torch.float64), 3)["zero_input"]
    assert n["not_converged"] == 0 and len(n["fixed_points"]) == 1
    point = n["fixed_points"][0]
    assert point["starts"] == 8 and point["stable"] and max(map(abs, point["state"])) < 1e-8
    assert point["jacobian_radius"] == pytest.approx(0.8)
    assert point["jacobian_norm"] == pytest.approx(torch.linalg.matrix_norm(W, ord=2).item())


def test_elman_expanding_weight_has_unstable_zero_and_stable_nonzero_fixed_points():
    """W = 1.5 I: h = 0 stays put (radius 1.5, unstable); the random starts go to h_i = +-x*, tanh(1.5 x*) = x*,
    where the radius is 1.5 (1 - x*^2) < 1."""
    x = 0.9
    for _ in range(200):
        x = math.tanh(1.5 * x)
    n = fixed_points(_elman(1.5 * torch.eye(2, dtype=torch.float64)).free_step, torch.zeros(2, dtype=torch.float64))
    zero, *others = n["fixed_points"]
    assert zero["state"] == [0.0, 0.0] and zero["starts"] == 1 and not zero["stable"]
    assert zero["jacobian_radius"] == pytest.approx(1.5)
    assert others and n["not_converged"] == 0
    for p in others:
        assert [abs(v) for v in p["state"]] == pytest.approx([x, x]) and p["stable"]
        assert p["jacobian_radius"] == pytest.approx(1.5 * (1 - x * x))


def test_fixed_point_iteration_reports_non_convergence():
    """h = tanh(W h) with W a rotation by 90 degrees times 3: random starts circle a limit cycle."""
    W = 3 * torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
    n = fixed_points(_elman(W).free_step, torch.zeros(2, dtype=torch.float64))
    assert n["not_converged"] == 7 and len(n["fixed_points"]) == 1 and not n["fixed_points"][0]["stable"]
