"""Mamba and Mamba-2 mixers: published initialization, recurrent step = parallel forward, causality,
optimizer hints, configs, and (slow) the selective-copying property through the CLI."""

import math

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from ssmbench.core.selective_scan import selective_scan_reference
from ssmbench.core.ssd import ssd_recurrent
from ssmbench.models.mamba import MambaMixer
from ssmbench.models.mamba2 import GatedRMSNorm, Mamba2Mixer
from ssmbench.optim import param_groups
from tests.compose import composed
from tests.helpers import step_outputs, train


def mamba(**kw):
    torch.manual_seed(0)
    return MambaMixer(**{"d_model": 12, "d_state": 5, **kw})


def mamba2(**kw):
    torch.manual_seed(0)
    return Mamba2Mixer(**{"d_model": 12, "d_state": 6, "headdim": 4, "chunk_size": 5, **kw})


def test_mamba_initialization_is_the_published_one():
    m = MambaMixer(d_model=40, d_state=16)
    assert m.d_inner == 80 and m.dt_rank == math.ceil(40 / 16) == 3
    A = -torch.exp(m.A_log)
    torch.testing.assert_close(A, -torch.arange(1.0, 17.0).expand(80, 16))      # S4D-Real: A_n = -(n + 1)
    assert torch.equal(m.D, torch.ones(80))
    dt = F.softplus(m.dt_proj.bias)                                               # delta at a zero input
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    assert m.dt_proj.weight.abs().max() <= 3 ** -0.5
    assert (m.x_proj.out_features, m.in_proj.out_features) == (3 + 32, 160) and m.conv.conv.bias is not None
    big = MambaMixer(d_model=1000, d_state=1, dt_min=1e-3, dt_max=1e-1)
    log_dt = torch.log(F.softplus(big.dt_proj.bias.detach().double()))
    assert abs(float(log_dt.mean()) - (math.log(1e-3) + math.log(1e-1)) / 2) < 0.1  # log-uniform


def test_mamba2_initialization_is_the_published_one():
    m = Mamba2Mixer(d_model=256, d_state=64, headdim=64, ngroups=2)
    assert (m.num_heads, m.d_inner) == (8, 512)
    assert m.in_proj.out_features == 512 + (512 + 2 * 2 * 64) + 8
    A = torch.exp(m.A_log)
    assert A.min() >= 1.0 and A.max() <= 16.0 and torch.equal(m.D, torch.ones(8))
    dt = F.softplus(m.dt_bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)


@pytest.mark.parametrize("make", [mamba, mamba2], ids=["mamba", "mamba2"])
def test_ssm_parameters_have_no_weight_decay(make):
    m = make()
    groups = {(g["lr"], g["weight_decay"]): set(g["names"]) for g in param_groups(m, lr=0.01, weight_decay=0.1)}
    no_decay = groups[(0.01, 0.0)]
    assert {"A_log", "D"} <= no_decay and "in_proj.weight" in groups[(0.01, 0.1)]
    if make is mamba2:
        assert {"dt_bias", "norm.weight"} <= no_decay


@pytest.mark.parametrize("make, options", [
    (mamba, {}), (mamba, {"dt_rank": 2, "bias": True, "conv_bias": False}),
    (mamba2, {}), (mamba2, {"ngroups": 3, "chunk_size": 4}), (mamba2, {"ngroups": 6, "chunk_size": 64}),
], ids=["mamba", "mamba-options", "mamba2", "mamba2-groups3", "mamba2-groups6"])
def test_step_equals_parallel_forward(make, options):
    m = make(**options).double()
    x = torch.randn(3, 23, 12, dtype=torch.float64)
    state = m.initial_state(3)
    assert all(s.dtype == torch.float64 for s in state.values())
    torch.testing.assert_close(step_outputs(m, x, state), m(x), rtol=1e-10, atol=1e-10)


def test_mamba_forward_is_the_written_out_block():
    """The parallel forward equals the docstring's equations evaluated with the loop reference."""
    m = mamba().double()
    u = torch.randn(2, 9, 12, dtype=torch.float64)
    x, z = (u @ m.in_proj.weight.T).chunk(2, -1)
    w, b = m.conv.conv.weight[:, 0], m.conv.conv.bias
    padded = torch.cat([torch.zeros(2, 3, m.d_inner, dtype=torch.float64), x], 1)
    x = F.silu(torch.stack([(padded[:, t:t + 4] * w.T).sum(1) for t in range(9)], 1) + b)
    dt, B, C = (x @ m.x_proj.weight.T).split([m.dt_rank, 5, 5], -1)
    delta = F.softplus(dt @ m.dt_proj.weight.T + m.dt_proj.bias)
    y = selective_scan_reference(x, delta, -torch.exp(m.A_log), B, C, D=m.D, z=z)
    torch.testing.assert_close(m(u), y @ m.out_proj.weight.T, rtol=1e-10, atol=1e-10)


def test_mamba2_forward_is_the_written_out_block():
    m = mamba2(ngroups=3).double()
    u = torch.randn(2, 11, 12, dtype=torch.float64)
    z, xBC, dt = (u @ m.in_proj.weight.T).split([24, 24 + 2 * 3 * 6, 6], -1)
    xBC = m.conv(xBC)
    x, B, C = xBC.split([24, 18, 18], -1)
    y, _ = ssd_recurrent(x.unflatten(-1, (6, 4)), F.softplus(dt + m.dt_bias), -torch.exp(m.A_log),
                         B.unflatten(-1, (3, 6)), C.unflatten(-1, (3, 6)))
    y = (y + x.unflatten(-1, (6, 4)) * m.D[:, None]).flatten(-2)
    g = (y * F.silu(z)).unflatten(-1, (3, 8))
    g = (g / torch.sqrt(g.pow(2).mean(-1, keepdim=True) + 1e-5)).flatten(-2)
    torch.testing.assert_close(m(u), (g * m.norm.weight) @ m.out_proj.weight.T, rtol=1e-10, atol=1e-10)


def test_gated_rmsnorm_normalizes_each_group():
    norm = GatedRMSNorm(6, groups=2, eps=1e-12).double()
    y, z = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    out = norm(y, z).unflatten(-1, (2, 3))
    torch.testing.assert_close(out.pow(2).mean(-1), torch.ones(4, 2, dtype=torch.float64), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("make", [mamba, mamba2], ids=["mamba", "mamba2"])
def test_output_at_t_does_not_depend_on_later_inputs(make):
    m = make()
    x = torch.randn(2, 17, 12)
    x2 = x.clone()
    x2[:, 9:] = torch.randn(2, 8, 12)
    assert m.causal
    torch.testing.assert_close(m(x2)[:, :9], m(x)[:, :9])
    assert (m(x2)[:, 9:] - m(x)[:, 9:]).abs().max() > 1e-4


@pytest.mark.parametrize("options, message", [
    (dict(headdim=5), "headdim=5 must divide expand \\* d_model = 24"),
    (dict(ngroups=4), "ngroups=4 must divide the number of heads 6"),
    (dict(chunk_size=0), "chunk_size=0 must be positive"),
    (dict(A_init_min=0.0), "need 0 < A_init_min <= A_init_max"),
])
def test_mamba2_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        mamba2(**options)


def test_mamba_bad_options():
    with pytest.raises(ValueError, match="d_state=0"):
        mamba(d_state=0)
    with pytest.raises(ValueError, match="dt_min <= dt_max"):
        mamba(dt_min=0.2)


@pytest.mark.parametrize("model, cls", [("mamba", MambaMixer), ("mamba2", Mamba2Mixer)])
def test_configs_build_the_published_block(model, cls):
    with composed(f"model={model}", "task=copy") as cfg:
        net = instantiate(cfg.model)
    mixer = net.blocks[0].mixer
    assert isinstance(mixer, cls) and net.causal and net.blocks[0].ff is None
    assert net.blocks[0].norm.kind == "rms" and mixer.d_inner == 2 * cfg.model.d_model
    if model == "mamba":
        assert mixer.d_state == 16 and mixer.conv.kernel_size == 4
    else:
        assert (mixer.d_state, mixer.headdim, mixer.ngroups, mixer.chunk_size) == (64, 64, 1, 64)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mamba", "mamba2"])
def test_cli_learns_selective_copying(tmp_path, model):
    """The defining property: content-based selection. A small selective-copying task (8 symbols among
    noise) is learned well above chance (1/8)."""
    small = ["model.mixer.headdim=32", "model.mixer.d_state=16"] if model == "mamba2" else []
    result = train(tmp_path / "run", f"model={model}", "task=selective_copy", "task.seq_len=32", "task.n_copy=4",
                   "task.n_train=2048", "task.n_val=256", "task.n_test=256", "model.d_model=64",
                   "trainer.max_epochs=6", "optimizer.lr=0.005", *small)
    assert result["status"] == "completed"
    assert result["metrics"]["test/acc"] > 0.5
