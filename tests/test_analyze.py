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
from ssmbench.analyze.spectra import (decay_numbers, delta_rule_numbers, jacobian_numbers, layer_numbers,
                                      timescale_summary, timescales)
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
    init, trained = (results["states"][s][0]["lti"]["eigenvalues"] for s in ("init", "trained"))
    assert init != trained
    assert set(results["figures"]["files"]) == {"eigenvalues.png", "timescales.png"}
    for name in results["figures"]["files"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run_cli("analyze", str(tmp_path / "absent")).returncode == 2
