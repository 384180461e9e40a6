"""The DeltaNet mixer: step() against the parallel forward, causality, its features, options, the
config, and end-to-end training on the copy task."""

import pytest
import torch
from hydra.utils import instantiate

from ssmbench.core.delta_rule import delta_rule_chunkwise
from ssmbench.models.deltanet import DeltaNetMixer
from ssmbench.models.short_conv import ShortConv
from tests.compose import composed
from tests.helpers import step_outputs, train


@pytest.mark.parametrize("use_short_conv", [True, False], ids=["conv", "noconv"])
@pytest.mark.parametrize("use_gate", [True, False], ids=["gate", "nogate"])
def test_step_equals_parallel_forward(use_short_conv, use_gate):
    torch.manual_seed(0)
    mixer = DeltaNetMixer(d_model=16, num_heads=2, expand_v=1.5, chunk_size=8, use_short_conv=use_short_conv,
                          use_gate=use_gate).double()
    x = torch.randn(3, 29, 16, dtype=torch.float64)
    state = mixer.initial_state(3)
    assert state["S"].dtype == torch.float64 and ("conv_q" in state) == use_short_conv
    torch.testing.assert_close(step_outputs(mixer, x, state), mixer(x), rtol=1e-10, atol=1e-10)


def test_step_state_continues_the_parallel_forward():
    """The final delta-rule state after stepping through a prefix equals the chunkwise final state."""
    torch.manual_seed(0)
    mixer = DeltaNetMixer(d_model=8, num_heads=2, chunk_size=4).double()
    x = torch.randn(2, 11, 8, dtype=torch.float64)
    state = mixer.initial_state(2)
    for x_t in x.unbind(1):
        _, state = mixer.step(x_t, state)
    _, S = delta_rule_chunkwise(*mixer.features(x), chunk_size=4)
    torch.testing.assert_close(state["S"], S, rtol=1e-12, atol=1e-12)


def test_short_conv_is_causal_and_its_step_matches():
    torch.manual_seed(0)
    conv = ShortConv(5, 4).double()
    x = torch.randn(2, 9, 5, dtype=torch.float64)
    y = conv(x)
    w = conv.conv.weight[:, 0]
    padded = torch.cat([torch.zeros(2, 3, 5, dtype=torch.float64), x], 1)
    expect = torch.stack([torch.nn.functional.silu((padded[:, t:t + 4] * w.T).sum(1)) for t in range(9)], 1)
    torch.testing.assert_close(y, expect)
    state = conv.initial_state(2, dtype=torch.float64)
    for t in range(9):
        y_t, state = conv.step(x[:, t], state)
        torch.testing.assert_close(y_t, y[:, t])


def test_output_at_t_does_not_depend_on_later_inputs():
    torch.manual_seed(0)
    mixer = DeltaNetMixer(d_model=16, num_heads=4, chunk_size=4)
    x = torch.randn(2, 13, 16)
    y = x.clone()
    y[:, 7:] = torch.randn(2, 6, 16)
    assert mixer.causal
    torch.testing.assert_close(mixer(x)[:, :7], mixer(y)[:, :7], rtol=0, atol=0)
    assert not torch.allclose(mixer(x)[:, 7:], mixer(y)[:, 7:])


def test_features_are_normalized_scaled_and_beta_in_unit_interval():
    torch.manual_seed(0)
    mixer = DeltaNetMixer(d_model=24, num_heads=3, expand_k=2.0, expand_v=0.5)
    q, k, v, beta = mixer.features(torch.randn(2, 10, 24))
    assert q.shape == k.shape == (2, 3, 10, 16) and v.shape == (2, 3, 10, 4) and beta.shape == (2, 3, 10)
    torch.testing.assert_close(k.norm(dim=-1), torch.ones(2, 3, 10))
    torch.testing.assert_close(q.norm(dim=-1), torch.full((2, 3, 10), 16**-0.5))
    assert ((beta > 0) & (beta < 1)).all()


def test_beta_range_zero_two_doubles_beta_and_step_still_equals_forward():
    torch.manual_seed(0)
    narrow = DeltaNetMixer(d_model=16, num_heads=2, chunk_size=8)
    torch.manual_seed(0)
    wide = DeltaNetMixer(d_model=16, num_heads=2, chunk_size=8, beta_range=[0, 2])
    assert (narrow.beta_scale, wide.beta_scale) == (1.0, 2.0)
    x = torch.randn(2, 10, 16)
    torch.testing.assert_close(wide.features(x)[3], 2 * narrow.features(x)[3], rtol=0, atol=0)
    wide = wide.double()
    x = x.double()
    torch.testing.assert_close(step_outputs(wide, x, wide.initial_state(2)), wide(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("bad", [(0, 3), (1, 0), [0, 1, 2], "[0, 1]", None, 1, (False, True)])
def test_bad_beta_range_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=r"deltanet: model.mixer.beta_range must be \[0, 1\] or \[0, 2\]"):
        DeltaNetMixer(d_model=16, beta_range=bad)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    mixer = DeltaNetMixer(d_model=16, num_heads=2, chunk_size=4, use_gate=True)
    mixer(torch.randn(2, 10, 16)).square().sum().backward()
    for name, p in mixer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_bfloat16_forward_is_close_to_float32():
    torch.manual_seed(0)
    mixer = DeltaNetMixer(d_model=32, num_heads=4, chunk_size=16)
    x = torch.randn(2, 40, 32)
    with torch.no_grad():
        y32 = mixer(x)
        y16 = mixer.to(torch.bfloat16)(x.bfloat16())
    assert y16.dtype == torch.bfloat16
    assert float((y16.float() - y32).abs().max() / y32.abs().max()) < 5e-2


def test_bad_head_count_is_a_clear_error():
    with pytest.raises(ValueError, match="num_heads=3 must divide"):
        DeltaNetMixer(d_model=16, num_heads=3)


def test_config_builds_the_published_block():
    with composed("model=deltanet", "task=copy") as cfg:
        net = instantiate(cfg.model)
    assert net.causal and net.positional == "none"
    block = net.blocks[0]
    assert isinstance(block.mixer, DeltaNetMixer) and block.prenorm and block.ff is not None
    assert block.norm.kind == "rms"
    x = torch.randint(0, 10, (2, 64))
    assert net(x).shape == (2, 64, 10)
    assert block.mixer.beta_scale == 1.0
    with composed("model=deltanet", "task=copy", "model.mixer.beta_range=[0,2]") as cfg:
        assert instantiate(cfg.model).blocks[0].mixer.beta_scale == 2.0


@pytest.mark.slow
def test_train_on_copy_learns(tmp_path, monkeypatch):
    """128 steps of a small model; it reaches about 0.98 test accuracy (seeds 1, 2; chance is 1/8).

    One intra-op thread: a model this small gains nothing from a second one, and on a busy 2-core
    machine OpenMP's spin-waiting made a 2-thread run about 10x slower (600 s instead of 40 s)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    results = train(tmp_path / "run", "model=deltanet", "task=copy", "model.d_model=32", "model.n_layers=2",
                    "task.seq_len=32", "task.n_copy=4", "task.n_train=2048", "task.n_val=256", "task.n_test=256",
                    "task.batch_size=32", "trainer.max_epochs=2", "optimizer.lr=3e-3", "print_config=false")
    assert results["status"] == "completed"
    assert results["metrics"]["test/acc"] > 0.8
