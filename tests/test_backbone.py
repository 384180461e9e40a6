from functools import partial

import pytest
import torch

from ssmbench.models.backbone import SequenceModel
from ssmbench.models.gru import GRUMixer
from ssmbench.models.transformer import AttentionMixer
from tests.helpers import step_outputs


def model(mixer=partial(GRUMixer), **kw):
    args = dict(name="m", mixer=mixer, n_classes=3, vocab_size=11, d_model=16, n_layers=2, dropout=0.0, max_len=32)
    args.update(kw)
    return SequenceModel(**args).eval()


def test_output_shapes_for_sequence_token_real_and_paired_inputs():
    torch.manual_seed(0)
    tokens = torch.randint(0, 11, (4, 20))
    assert model()(tokens).shape == (4, 3)
    assert model(target="token")(tokens).shape == (4, 20, 3)
    assert model(vocab_size=None, d_input=2)(torch.randn(4, 20, 2)).shape == (4, 3)
    assert model(paired=True)(torch.randint(0, 11, (4, 2, 20))).shape == (4, 3)


def test_paired_model_encodes_each_document_like_an_unpaired_one():
    torch.manual_seed(0)
    m = model(paired=True)
    x = torch.randint(0, 11, (3, 2, 20))
    a, b = m.pooled(m.features(x[:, 0]), None), m.pooled(m.features(x[:, 1]), None)
    expect = m.decoder(torch.cat([a, b, a - b, a * b], -1))
    torch.testing.assert_close(m(x), expect)


def test_mlp_decoder_is_linear_gelu_linear_on_the_paired_features():
    """decoder=mlp: W2 gelu(W1 f + b1) + b2 with W1: 4D -> D for a paired task (the S4 release's AAN head)."""
    torch.manual_seed(0)
    m = model(paired=True, decoder="mlp")
    first, last = m.decoder[0], m.decoder[2]
    assert (first.in_features, first.out_features, last.out_features) == (64, 16, 3)
    x = torch.randint(0, 11, (3, 2, 20))
    a, b = m.pooled(m.features(x[:, 0]), None), m.pooled(m.features(x[:, 1]), None)
    f = torch.cat([a, b, a - b, a * b], -1)
    expect = torch.nn.functional.gelu(f @ first.weight.T + first.bias) @ last.weight.T + last.bias
    torch.testing.assert_close(m(x), expect)
    assert model(decoder="mlp")(torch.randint(0, 11, (4, 20))).shape == (4, 3)
    assert model(decoder="mlp").decoder[0].in_features == 16


def test_tied_dropout_drops_a_channel_at_every_step_at_once():
    from ssmbench.models.dropout import SequenceDropout

    torch.manual_seed(0)
    x = torch.ones(64, 50, 8)
    tied, free = SequenceDropout(0.3, tied=True).train(), SequenceDropout(0.3).train()
    y = tied(x)
    assert torch.unique(y).tolist() == pytest.approx([0.0, 1 / 0.7])
    assert (y == y[:, :1]).all()                                 # one mask per (sequence, channel)
    assert abs(float((y[:, 0] == 0).float().mean()) - 0.3) < 0.05
    assert not (free(x) == free(x)[:, :1]).all()
    assert torch.equal(tied.eval()(x), x) and tied.train()(x[:, 0]).shape == (64, 8)
    assert torch.equal(SequenceDropout(1.0, tied=True).train()(x), torch.zeros_like(x))
    m = model(dropout=0.5, tie_dropout=True).train()
    assert all(block.drop.tied and block.drop.p == 0.5 for block in m.blocks)


def test_mean_pooling_ignores_padding_and_last_pooling_takes_last_valid():
    m = model(pool="mean")
    u = torch.randn(2, 5, 16)
    lengths = torch.tensor([3, 5])
    torch.testing.assert_close(m.pooled(u, lengths), torch.stack([u[0, :3].mean(0), u[1].mean(0)]))
    m.pool = "last"
    torch.testing.assert_close(m.pooled(u, lengths), torch.stack([u[0, 2], u[1, 4]]))


@pytest.mark.parametrize("norm", ["layer", "batch", "rms"])
@pytest.mark.parametrize("prenorm", [True, False])
@pytest.mark.parametrize("ff", ["none", "mlp", "glu", "swiglu", "geglu"])
def test_block_variants_run_and_train(norm, prenorm, ff):
    m = model(norm=norm, prenorm=prenorm, ff=ff).train()
    loss = m(torch.randint(0, 11, (4, 12))).logsumexp(-1).mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


def future_changes_past(m, L=12, t=6):
    x = torch.randint(0, 11, (1, L))
    y = x.clone()
    y[0, t:] = (y[0, t:] + 1) % 11
    return not torch.allclose(m.features(x)[:, :t], m.features(y)[:, :t], atol=1e-6)


def test_causality_property_matches_behaviour():
    torch.manual_seed(0)
    causal_attn = model(mixer=partial(AttentionMixer, num_heads=2, causal=True), positional="sinusoidal")
    full_attn = model(mixer=partial(AttentionMixer, num_heads=2, causal=False), positional="learned")
    bi_gru = model(bidirectional=True)
    assert causal_attn.causal and not future_changes_past(causal_attn)
    assert model().causal and not future_changes_past(model())
    assert not full_attn.causal and future_changes_past(full_attn)
    assert not bi_gru.causal and future_changes_past(bi_gru)


def test_gru_mixer_step_equals_forward():
    torch.manual_seed(0)
    mixer = GRUMixer(d_model=8, num_layers=2)
    x = torch.randn(3, 9, 8)
    state = mixer.initial_state(3)
    torch.testing.assert_close(step_outputs(mixer, x, state), mixer(x), atol=1e-6, rtol=1e-5)


def test_bad_options_name_the_key():
    with pytest.raises(ValueError, match="model.norm='group'"):
        model(norm="group")
    with pytest.raises(ValueError, match="model.decoder='conv' is not one of"):
        model(decoder="conv")
    with pytest.raises(ValueError, match="exactly one of d_input or vocab_size"):
        model(vocab_size=None)


def test_feedforward_variants_compute_their_formulas():
    from ssmbench.models.backbone import FeedForward

    torch.manual_seed(0)
    x = torch.randn(2, 5, 8)
    for kind, act in (("mlp", torch.nn.functional.gelu),
                      ("glu", lambda h: h[..., :16] * torch.sigmoid(h[..., 16:])),
                      ("swiglu", lambda h: torch.nn.functional.silu(h[..., :16]) * h[..., 16:]),
                      ("geglu", lambda h: 0.5 * h[..., :16] * (1 + torch.tanh(
                          (2 / torch.pi) ** 0.5 * (h[..., :16] + 0.044715 * h[..., :16] ** 3))) * h[..., 16:])):
        ff = FeedForward(kind, d_model=8, expand=2, dropout=0.0)
        torch.testing.assert_close(ff(x), ff.out(act(ff.inp(x))), msg=kind)
    assert FeedForward("swiglu", 8, 2, 0.0).inp.out_features == 32
    assert FeedForward("geglu", 8, 2, 0.0).inp.out_features == 32
