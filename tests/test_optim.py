import math

import pytest
import torch
from torch import nn

from ssmbench.models.params import optim_hint, set_optim
from ssmbench.optim import constant, cosine_warmup, param_groups, plateau


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(5, 4)
        self.lin = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.A = set_optim(nn.Parameter(torch.zeros(3)), lr=1e-3, weight_decay=0.0)
        self.nu = set_optim(nn.Parameter(torch.zeros(3)), lr=0.005)
        self.frozen = nn.Parameter(torch.zeros(2), requires_grad=False)


def group_of(groups, name):
    (g,) = [g for g in groups if name in g["names"]]
    return g["lr"], g["weight_decay"]


def test_parameter_hints_give_their_own_lr_and_weight_decay():
    groups = param_groups(Toy(), lr=0.01, weight_decay=0.1)
    assert group_of(groups, "A") == (1e-3, 0.0)
    assert group_of(groups, "nu") == (0.005, 0.1)
    assert group_of(groups, "lin.weight") == (0.01, 0.1)


def test_no_weight_decay_on_biases_norms_and_embeddings():
    groups = param_groups(Toy(), lr=0.01, weight_decay=0.1)
    for name in ("lin.bias", "norm.weight", "norm.bias", "emb.weight"):
        assert group_of(groups, name) == (0.01, 0.0), name


def test_every_trainable_parameter_in_exactly_one_group():
    model = Toy()
    groups = param_groups(model, lr=0.01, weight_decay=0.1)
    names = [n for g in groups for n in g["names"]]
    assert sorted(names) == sorted(n for n, p in model.named_parameters() if p.requires_grad)


def test_set_optim_takes_an_absolute_lr_only():
    with pytest.raises(TypeError, match="lr_scale"):
        set_optim(nn.Parameter(torch.zeros(1)), lr=1.0, lr_scale=2.0)
    assert optim_hint(nn.Parameter(torch.zeros(1))) == {}


def lrs(sched_dict, steps):
    sched, opt = sched_dict["scheduler"], sched_dict["scheduler"].optimizer
    out = []
    for _ in range(steps):
        out.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return out


def make_opt():
    return torch.optim.SGD([{"params": [nn.Parameter(torch.zeros(1))], "lr": 1.0},
                            {"params": [nn.Parameter(torch.zeros(1))], "lr": 0.1}])


def test_cosine_warmup_values_scale_every_group():
    out = lrs(cosine_warmup(make_opt(), total_steps=10, warmup_steps=2, min_lr_ratio=0.1), 10)
    assert out[0] == pytest.approx([0.5, 0.05])
    assert out[1] == pytest.approx([1.0, 0.1])
    s = 5
    expect = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - 2) / 8))
    assert out[s] == pytest.approx([expect, 0.1 * expect])


def test_cosine_span_steps_is_the_published_span_not_the_steps_trained():
    """The S4 release's sCIFAR schedule: the cosine spans 200000 steps, 180000 are trained (the lr never
    reaches 0); span_steps shorter than the run holds the floor afterwards."""
    long = lrs(cosine_warmup(make_opt(), total_steps=9, warmup_steps=1, span_steps=11), 9)
    for s in range(1, 9):
        assert long[s][0] == pytest.approx(0.5 * (1 + math.cos(math.pi * (s - 1) / 10)))
    assert long[8][0] > 0.05
    short = lrs(cosine_warmup(make_opt(), total_steps=10, warmup_fraction=0.25, span_steps=4, min_lr_ratio=0.1), 10)
    assert short[0][0] == pytest.approx(1.0) and short[4][0] == pytest.approx(0.1) and short[9][0] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="span_steps=0 must be at least 1"):
        cosine_warmup(make_opt(), total_steps=10, span_steps=0)


def test_constant_with_warmup_and_plateau_interval():
    out = lrs(constant(make_opt(), total_steps=10, warmup_fraction=0.3), 6)
    assert [o[0] for o in out] == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0, 1.0, 1.0])
    p = plateau(make_opt(), total_steps=10)
    assert p["interval"] == "epoch" and p["monitor"] == "val/loss"
