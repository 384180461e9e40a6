"""optimizer=muon: torch.optim.Muon on the hidden matrices of the blocks, AdamW on the rest, as one optimizer."""

import io
import json
from functools import partial

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from ssmbench.build import build_model, build_task
from ssmbench.config import config_groups
from ssmbench.models.params import optim_hint, set_optim
from ssmbench.optim import NO_DECAY_MODULES, MuonWithAdamW, build_optimizer, constant, plateau
from tests.compose import composed
from tests.helpers import run_cli, train

SMALL = ["model.d_model=16", "model.n_layers=1", "task.num_workers=0"]
SMALL_MIXER = {"mamba2": ["model.mixer.headdim=8", "model.mixer.d_state=8"]}
MUON = dict(lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95), muon_lr=0.02, muon_weight_decay=0.01, momentum=0.95,
            nesterov=True, ns_steps=5, adjust_lr_fn="original")


class Toy(nn.Module):
    """A SequenceModel's layout: encoder, blocks (a hidden matrix, a conv filter, a hinted matrix, a norm), decoder."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Embedding(5, 6)
        self.blocks = nn.ModuleList([nn.ModuleDict({
            "proj": nn.Linear(6, 8),
            "conv": nn.Conv1d(8, 8, 3, groups=8),
            "norm": nn.LayerNorm(8),
        })])
        self.blocks[0].A = set_optim(nn.Parameter(torch.randn(8, 4)), lr=1e-4, weight_decay=0.0)
        self.decoder = nn.Linear(8, 3)


def muon_of(model, **kw):
    return build_optimizer(partial(MuonWithAdamW, **{**MUON, **kw}), model, MUON["lr"], MUON["weight_decay"])


def names_of(model, opt):
    ids = {id(p): n for n, p in model.named_parameters()}
    muon, adamw = opt.optimizers
    return [ids[id(p)] for g in muon.param_groups for p in g["params"]], \
           {ids[id(p)]: (g["lr"], g["weight_decay"]) for g in adamw.param_groups for p in g["params"]}


def test_toy_split_and_groups():
    model = Toy()
    opt = muon_of(model)
    muon_names, adamw = names_of(model, opt)
    assert muon_names == ["blocks.0.proj.weight"]
    assert isinstance(opt.optimizers[0], torch.optim.Muon) and isinstance(opt.optimizers[1], torch.optim.AdamW)
    assert opt.param_groups[0]["lr"] == 0.02 and opt.param_groups[0]["weight_decay"] == 0.01
    assert adamw == {"encoder.weight": (1e-3, 0.0), "blocks.0.proj.bias": (1e-3, 0.0),
                     "blocks.0.conv.weight": (1e-3, 0.1), "blocks.0.conv.bias": (1e-3, 0.0),
                     "blocks.0.norm.weight": (1e-3, 0.0), "blocks.0.norm.bias": (1e-3, 0.0),
                     "blocks.0.A": (1e-4, 0.0), "decoder.weight": (1e-3, 0.1), "decoder.bias": (1e-3, 0.0)}
    assert opt.param_groups == opt.optimizers[0].param_groups + opt.optimizers[1].param_groups
    assert all(a is b for a, b in zip(opt.param_groups, opt.optimizers[0].param_groups + opt.optimizers[1].param_groups))


def test_plain_optimizers_get_groups_without_names():
    opt = build_optimizer(partial(torch.optim.AdamW), Toy(), 1e-3, 0.1)
    assert all("names" not in g for g in opt.param_groups)
    with pytest.raises(ValueError, match="named parameter groups: build it with ssmbench.optim.build_optimizer"):
        MuonWithAdamW([{"params": list(Toy().parameters()), "lr": 1e-3, "weight_decay": 0.0}], **MUON)
    with pytest.raises(ValueError, match=r"optimizer.muon_lr=0.0 must be a finite number > 0"):
        muon_of(Toy(), muon_lr=0.0)


@pytest.mark.parametrize("model", config_groups()["model"])
def test_grouping_of_every_model(model, tmp_path):
    """Muon gets real 2-D, unhinted weights of the blocks only (no norm, embedding, encoder, decoder); every
    hinted parameter is in AdamW with its hint's lr and weight decay; every trainable parameter is in one group."""
    with composed(f"model={model}", "task=copy", "optimizer=muon", *SMALL, *SMALL_MIXER.get(model, []),
                  output_dir=tmp_path) as cfg:
        net = build_model(cfg, build_task(cfg))
        lr, wd = cfg.optimizer.lr, cfg.optimizer.weight_decay
        opt = build_optimizer(instantiate(cfg.optimizer), net, lr, wd)
        muon_lr, muon_wd = cfg.optimizer.muon_lr, cfg.optimizer.muon_weight_decay
    params = dict(net.named_parameters())
    muon_names, adamw = names_of(net, opt)
    assert muon_names, "a model without hidden matrices"
    assert sorted(muon_names + list(adamw)) == sorted(n for n, p in params.items() if p.requires_grad)
    no_decay = {id(p) for m in net.modules() if isinstance(m, NO_DECAY_MODULES) for p in m.parameters(recurse=False)}
    for name in muon_names:
        p = params[name]
        assert name.startswith("blocks.") and p.ndim == 2 and not p.is_complex() and not optim_hint(p), name
        assert id(p) not in no_decay, name
    assert (opt.param_groups[0]["lr"], opt.param_groups[0]["weight_decay"]) == (muon_lr, muon_wd)
    for name, p in params.items():
        hint = optim_hint(p)
        if hint:
            assert adamw[name] == (hint.get("lr", lr), hint.get("weight_decay", adamw[name][1])), name
        if not name.startswith("blocks."):
            assert adamw[name][0] == lr, name
    assert all(adamw[n] == (lr, wd) for n in params if n.startswith("decoder.") and n.endswith("weight"))


def test_update_of_a_hidden_matrix_is_its_gradients_msign_up_to_scaling():
    """First step, no weight decay: the update is -lr sqrt(max(1, rows/cols)) NS5(G) for the gradient G = U S V^T
    (Nesterov momentum makes it a positive multiple of G). torch's quintic Newton-Schulz (in bfloat16) does not
    converge to U V^T: it returns U S' V^T with S' roughly in [0.5, 1.5] (torch/optim/_muon.py). Measured here:
    |U^T O V - diag| = 4.7e-3, diag in [0.686, 1.039] for singular values of G spread over [1e-2, 1]."""
    torch.manual_seed(0)
    model = Toy().double()
    opt = muon_of(model, muon_weight_decay=0.0)
    w = model.blocks[0].proj.weight
    u, _ = torch.linalg.qr(torch.randn(8, 6, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    s = torch.logspace(-2, 0, 6, dtype=torch.float64)
    w.grad = u @ torch.diag(s) @ v.T
    before = w.detach().clone()
    opt.step()
    o = (before - w.detach()) / (0.02 * (8 / 6) ** 0.5)
    core = u.T @ o @ v
    diag = torch.diagonal(core)
    assert (core - torch.diag(diag)).abs().max() < 1e-2
    assert diag.min() > 0.6 and diag.max() < 1.2
    assert torch.linalg.svdvals(o).max() < 1.2


def test_schedulers_scale_both_optimizers():
    opt = muon_of(Toy())
    sched = constant(opt, total_steps=10, warmup_steps=4)["scheduler"]
    for _ in range(2):
        opt.step()
        sched.step()
    muon, adamw = opt.optimizers
    assert muon.param_groups[0]["lr"] == pytest.approx(0.02 * 3 / 4)
    assert sorted(g["lr"] for g in adamw.param_groups) == pytest.approx([1e-4 * 3 / 4, 1e-3 * 3 / 4, 1e-3 * 3 / 4])
    p = plateau(opt, total_steps=10, patience=0, factor=0.5)["scheduler"]
    p.step(1.0)
    p.step(2.0)
    assert muon.param_groups[0]["lr"] == pytest.approx(0.02 * 3 / 8)
    assert sorted(g["lr"] for g in adamw.param_groups) == pytest.approx([1e-4 * 3 / 8, 1e-3 * 3 / 8, 1e-3 * 3 / 8])


def train_steps(model, opt, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randint(0, 5, (4, 7), generator=gen)
        h = model.blocks[0].proj(model.encoder(x))
        h = model.blocks[0].conv(h.transpose(1, 2)).transpose(1, 2)
        loss = model.decoder(model.blocks[0].norm(h) @ model.blocks[0].A @ model.blocks[0].A.T).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_checkpoint_round_trip_continues_exactly():
    """3 steps, save (weights-only loadable), rebuild, load, 2 more steps == 5 uninterrupted steps."""
    torch.manual_seed(0)
    straight = Toy()
    resumed = Toy()
    resumed.load_state_dict(straight.state_dict())
    opt = muon_of(straight)
    train_steps(straight, opt, 3, seed=1)
    buf = io.BytesIO()
    torch.save({"model": straight.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    resumed.load_state_dict(ckpt["model"])
    opt2 = muon_of(resumed)
    opt2.load_state_dict(ckpt["opt"])
    assert opt2.optimizers[0].state is opt2.state and opt2.optimizers[1].param_groups[0] is opt2.param_groups[1]
    assert "momentum_buffer" in opt2.state[resumed.blocks[0].proj.weight]
    assert "exp_avg_sq" in opt2.state[resumed.decoder.weight]
    train_steps(straight, opt, 2, seed=2)
    train_steps(resumed, opt2, 2, seed=2)
    for (n, a), b in zip(straight.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), n


def test_lr_wd_sweep_composes_with_muon(tmp_path):
    """sweep=lr_wd's keys exist in optimizer=muon (they tune its AdamW side); optimizer.muon_lr joins from the
    command line."""
    with composed("sweep=lr_wd", "optimizer=muon", "model=gru", output_dir=tmp_path) as cfg:
        pass
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from ssmbench.config import config_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        hcfg = compose("config", ["sweep=lr_wd", "optimizer=muon", "model=gru"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    keys = [k for k in hcfg.hydra.sweeper.params if k.startswith("optimizer.")]
    assert keys == ["optimizer.lr", "optimizer.weight_decay"]
    assert all(k.split(".", 1)[1] in cfg.optimizer for k in keys)
    with composed("optimizer=muon", "model=gru", "optimizer.lr=1e-3", "optimizer.weight_decay=0.05",
                  "optimizer.muon_lr=0.01", *SMALL, output_dir=tmp_path) as trial:
        net = build_model(trial, build_task(trial))
        opt = build_optimizer(instantiate(trial.optimizer), net, trial.optimizer.lr, trial.optimizer.weight_decay)
    assert opt.param_groups[0]["lr"] == 0.01 and opt.param_groups[1]["lr"] == 1e-3
    assert max(g["weight_decay"] for g in opt.param_groups[1:]) == 0.05


@pytest.mark.slow
def test_train_copy_with_muon(tmp_path, monkeypatch):
    """`ssmbench train optimizer=muon task=copy` end to end: test/acc 0.998 (seed 1; AdamW at the same lr 0.965; chance 1/8)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    results = train(tmp_path / "run", "model=deltanet", "task=copy", "optimizer=muon", "optimizer.lr=3e-3",
                    "model.d_model=32", "model.n_layers=2", "task.seq_len=32", "task.n_copy=4", "task.n_train=2048",
                    "task.n_val=256", "task.n_test=256", "task.batch_size=32", "trainer.max_epochs=2",
                    "print_config=false")
    assert results["status"] == "completed"
    assert results["metrics"]["test/acc"] > 0.8


@pytest.mark.slow
def test_resume_with_muon_ends_where_the_uninterrupted_run_ends(tmp_path):
    """One epoch, then `resume=` to two: the weights and both optimizers' states equal those of two epochs in one go."""
    tiny = ["model=gru", "model.d_model=32", "model.n_layers=1", "task.n_train=512", "task.n_val=64", "task.n_test=64",
            "optimizer=muon", "scheduler=constant", "print_config=false"]
    straight = train(tmp_path / "straight", *tiny, "trainer.max_epochs=2")
    train(tmp_path / "resumed", *tiny, "trainer.max_epochs=1")
    proc = run_cli("train", f"resume={tmp_path / 'resumed'}", "trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]

    def last(run):
        return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)

    a, b = last(tmp_path / "straight"), last(tmp_path / "resumed")
    assert a["global_step"] == b["global_step"] == 16
    muon_weights = [k for k in a["state_dict"] if k.startswith("net.blocks.") and a["state_dict"][k].dim() == 2]
    assert muon_weights
    for k in (k for k in a["state_dict"] if k.startswith("net.")):
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    sa, sb = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert sa.keys() == sb.keys() and len(sa) > len(muon_weights)
    for i in sa:
        for k in sa[i]:
            assert torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k])), (i, k)
    assert straight["metrics"]["test/acc"] == json.loads((tmp_path / "resumed" / "results.json").read_text())[
        "metrics"]["test/acc"]


@pytest.mark.parametrize("override, message", [
    ("optimizer.muon_lr=-1", "optimizer.muon_lr=-1 must be a finite number > 0"),
    ("optimizer.muon_weight_decay=-0.1", "optimizer.muon_weight_decay=-0.1 must be a finite number >= 0"),
])
def test_bad_muon_values_are_refused_before_anything_is_built(override, message):
    from ssmbench.errors import UserError
    from ssmbench.preflight import check_config

    with composed("optimizer=muon", override) as cfg:
        with pytest.raises(UserError, match=message):
            check_config(cfg)
