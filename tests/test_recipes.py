"""Every published recipe in conf/experiment/<task>/<model>.yaml composes against the real task and
model configs, resolves, builds its model, and says where each of its numbers comes from.

Parametrized over the files, so a new recipe is covered as soon as it exists (no training, no data)."""

import copy
import functools
import math
import re

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from ssmbench.config import config_dir, config_groups, register_resolvers
from ssmbench.optim import param_groups

RECIPES = config_groups().get("experiment", [])
SCALAR_LINE = re.compile(r"^\s*[A-Za-z_][\w.]*:\s*[^\s#{\[][^#]*$")  # `key: value` without a comment


def compose_recipe(name: str, *overrides: str):
    """The composed recipe (with its hydra node), a fresh copy each call: composed once per arguments."""
    return copy.deepcopy(_composed(name, overrides))


@functools.lru_cache(maxsize=None)
def _composed(name: str, overrides: tuple[str, ...]):
    register_resolvers()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            return compose("config", [f"experiment={name}", *overrides], return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_composes_resolves_and_builds(name, tmp_path):
    task, model = name.split("/")
    cfg = compose_recipe(name)
    assert (cfg.task.name, cfg.model.name) == (task, model), "a recipe lives at conf/experiment/<task>/<model>.yaml"
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.paths.output_dir = str(tmp_path)
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    # The recipe's model keys are accepted by the constructors (one layer keeps this fast).
    with open_dict(cfg):
        cfg.model.n_layers = 1
    net = instantiate(cfg.model)
    assert sum(p.numel() for p in net.parameters()) > 0


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_cites_a_source_for_every_number(name):
    text = (config_dir() / "experiment" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_\n")
    assert f"experiment={name}" in text, "the header shows the command that runs the recipe"
    uncited = [line for line in text.splitlines() if SCALAR_LINE.match(line)]
    assert not uncited, f"values without a source comment: {uncited}"


@pytest.mark.parametrize("name", [r for r in RECIPES if r.startswith("mqar/")])
def test_mqar_recipes_sweep_the_learning_rate_and_run_singly_on_request(name):
    cfg = compose_recipe(name)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert [float(x) for x in cfg.hydra.sweeper.params["optimizer.lr"].split(",")] == pytest.approx(
        [1e-4, 10 ** -3.3333333333333335, 10 ** -2.6666666666666665, 1e-2])
    single = compose_recipe(name, "hydra.mode=RUN", "optimizer.lr=0.003")
    assert str(single.hydra.mode) == "RunMode.RUN" and single.optimizer.lr == 0.003


def test_recipe_folders_are_task_names_and_files_model_names():
    groups = config_groups()
    for name in RECIPES:
        task, model = name.split("/")
        assert task in groups["task"] and model in groups["model"], name


# ---------------------------------------------------------------------------------------------------------
# Each recipe pinned to its source: the composed value of every key that defines it, with where it was read.
# A later change of a default, a task config or a recipe that moves one of these fails here, naming the key.
S4 = "github.com/state-spaces/s4 "
V3_LAYER = S4 + "configs/model/layer/s4.yaml@ab287c6 (V3 code: log_dt, dropout after the GELU)"
V3_COSINE = S4 + "configs/scheduler/cosine_warmup.yaml@ab287c6 (transformers' schedule: warmup 1000, decays to 0)"
V3_MODEL = S4 + "configs/model/s4.yaml@ab287c6 (tie_dropout unset; the sequence decoder is one Linear)"


def s4_lra(file: str, **pins) -> dict:
    """The keys every V3 S4 recipe shares (layer and schedule defaults), then the file's own."""
    common = {
        "model.mixer.init": ("legs", file), "model.mixer.dt_max": (0.1, file),
        "model.mixer.dt_transform": ("exp", V3_LAYER), "model.mixer.bidirectional": (True, file),
        "scheduler._target_": ("ssmbench.optim.cosine_warmup", file + " override /scheduler: cosine_warmup"),
        "scheduler.min_lr_ratio": (0.0, V3_COSINE), "model.decoder": ("linear", V3_MODEL),
        "model.tie_dropout": (False, V3_MODEL), "model.mixer.dropout": (pins["model.dropout"][0], file + " model.dropout"),
        "model.mixer.d_state": (64, file), "model.mixer.dt_min": (0.001, file),
    }
    return {**common, **pins}


def lra_file(name: str, commit: str = "ab287c6") -> str:
    return S4 + f"configs/experiment/lra/s4-lra-{name}.yaml@{commit}"


LISTOPS, IMDB, AAN = lra_file("listops"), lra_file("imdb"), lra_file("aan", "d589d98")
PATHFINDER, PATHX = lra_file("pathfinder"), lra_file("pathx", "d589d98")
IMAGE = S4 + "configs/experiment/lra/old/v3-s4-cifar.yaml@62a14ba"
SCIFAR = S4 + "configs/experiment/cifar/s4-cifar.yaml@d589d98"
LRA_LOADERS = S4 + "src/dataloaders/lra.py@ab287c6 (ListOps, IMDB, AAN, PathFinder defaults)"
CIFAR_DATA = S4 + "configs/dataset/cifar.yaml@a0c724a val_split 0.1"
MNIST = S4 + "README (pipeline=mnist dataset.permute=True model.n_layers=3 model.d_model=128 ...)"
MNIST_DEFAULTS = S4 + "configs/{pipeline/cifar,optimizer/adamw,loader/default,dataset/mnist,scheduler/plateau}.yaml"
LRU = "Orvieto et al. 2023 (arXiv:2303.06349) "
TB9, TB8, D1, D2, D3 = (LRU + "Table 9", LRU + "Table 8, LRU row", LRU + "App. D.1", LRU + "App. D.2", LRU + "App. D.3")
S5 = "github.com/lindermanlab/S5@d133f4d bin/run_experiments/run_lra_{}.sh (ssm_lr_base x lr_factor)"
ZOO = "github.com/HazyResearch/zoology MQAR example configs and TrainConfig defaults"
MAMBA = "Gu & Dao 2023 (arXiv:2312.00752v2) "
E1, T1, S412 = MAMBA + "App. E.1", MAMBA + "Table 1", MAMBA + "Sec. 4.1.2"
MAMBA_CODE = "github.com/state-spaces/mamba mamba_ssm/modules/mamba_simple.py@52f57d6 defaults"


def selective_copy(**pins) -> dict:
    return {"task.seq_len": (4096, E1), "task.n_copy": (16, E1), "task.vocab_size": (16, E1),
            "task.batch_size": (64, E1), "model.n_layers": (2, E1), "model.d_model": (64, E1), "model.ff": ("none", T1),
            "optimizer.lr": (1e-4, E1), "scheduler._target_": ("ssmbench.optim.constant", E1),
            "scheduler.warmup_fraction": (0.0, E1), "trainer.max_steps": (400000, E1), **pins}


def induction(**pins) -> dict:
    return {"task.seq_len": (256, S412), "task.vocab_size": (16, S412), "task.batch_size": (8, E1),
            "model.n_layers": (2, S412), "model.ff": ("none", S412), "optimizer.weight_decay": (0.0, E1),
            "scheduler._target_": ("ssmbench.optim.constant", E1), "scheduler.warmup_fraction": (0.0, E1),
            "train_steps": (204800, E1 + " 25 epochs of 8192 steps"), **pins}


def s4_mnist(permutation) -> dict:
    return {
        "seed": (0, MNIST_DEFAULTS), "task.batch_size": (50, MNIST_DEFAULTS), "task.mean": ([0.0], MNIST_DEFAULTS),
        "task.std": ([1.0], MNIST_DEFAULTS), "task.val_fraction": (0.1, MNIST_DEFAULTS),
        "task.permutation": (permutation, MNIST + (" dataset.permute: bit-reversal" if permutation else " less dataset.permute")),
        "model.n_layers": (3, MNIST), "model.d_model": (128, MNIST), "model.prenorm": (True, MNIST),
        "model.norm": ("batch", MNIST), "model.dropout": (0.0, V3_MODEL), "model.tie_dropout": (False, V3_MODEL),
        "model.pool": ("mean", MNIST_DEFAULTS), "model.decoder": ("linear", V3_MODEL),
        "model.mixer.d_state": (64, V3_LAYER), "model.mixer.n_ssm": (1, V3_LAYER), "model.mixer.init": ("legs", V3_LAYER),
        "model.mixer.dt_min": (0.001, V3_LAYER), "model.mixer.dt_max": (0.1, V3_LAYER),
        "model.mixer.dt_transform": ("exp", V3_LAYER), "model.mixer.ssm_lr": (0.001, V3_LAYER),
        "dt_lr": (0.001, V3_LAYER + " lr.dt"), "model.mixer.bidirectional": (False, V3_LAYER),
        "optimizer.lr": (0.001, MNIST_DEFAULTS), "optimizer.weight_decay": (0.0, MNIST_DEFAULTS),
        "scheduler._target_": ("ssmbench.optim.plateau", MNIST_DEFAULTS), "scheduler.monitor": ("val/acc", MNIST_DEFAULTS),
        "scheduler.mode": ("max", MNIST_DEFAULTS), "scheduler.factor": (0.2, MNIST_DEFAULTS),
        "scheduler.patience": (20, MNIST_DEFAULTS), "trainer.max_epochs": (200, MNIST_DEFAULTS),
    }


def cifar(file: str, task: str, norm_source: str, dt_lr, warmup: int, span: int) -> dict:
    return s4_lra(
        file, **{"seed": (2222, file), "task.name": (task, file), "task.batch_size": (50, file),
                 "task.val_fraction": (0.1, CIFAR_DATA), "model.n_layers": (6, file), "model.d_model": (512, file),
                 "model.prenorm": (False, file), "model.norm": ("layer", norm_source), "model.dropout": (0.1, file),
                 "model.tie_dropout": (True, file), "model.pool": ("mean", file + " pipeline cifar"),
                 "model.mixer.n_ssm": (2, file), "model.mixer.ssm_lr": (0.001, file + " lr.A, lr.B"),
                 "dt_lr": dt_lr, "optimizer.lr": (0.01, file), "optimizer.weight_decay": (0.05, file),
                 "scheduler.warmup_steps": (warmup, file), "scheduler.span_steps": (span, file),
                 "trainer.max_epochs": (200, file)})


def lru(task: str, s5_script: str, lr: float, batch: int, d_model: int, d_state: int, steps: int, factor: float,
        dropout: float, ring: tuple, bidirectional: bool, max_phase: float = 6.283185307179586) -> dict:
    s5 = S5.format(s5_script)
    pins = {
        "task.batch_size": (batch, TB9), "model.n_layers": (6, TB9), "model.d_model": (d_model, TB9),
        "model.mixer.d_state": (d_state, TB9), "trainer.max_steps": (steps, TB9), "model.dropout": (dropout, TB9),
        "model.mixer.dropout": (dropout, TB9), "ssm_lr_factor": (factor, TB9), "optimizer.weight_decay": (0.05, TB9),
        "model.mixer.r_min": (ring[0], TB8), "model.mixer.r_max": (ring[1], TB8), "model.mixer.max_phase": (max_phase, TB8),
        "model.prenorm": (True, D1), "model.norm": ("batch", D1), "model.bidirectional": (bidirectional, D1),
        "scheduler._target_": ("ssmbench.optim.cosine_warmup", D2), "scheduler.warmup_fraction": (0.1, D2),
        "scheduler.min_lr_ratio": (0.0, D2), "optimizer.lr": (lr, s5),
    }
    if task != "scifar":
        pins["sweep.optimizer.lr"] = ([lr / 2, lr, 2 * lr], D3 + " (powers of 2) around " + s5)
    return pins


PINNED = {
    "listops/s4": s4_lra(LISTOPS, **{
        "seed": (2222, LISTOPS), "task.batch_size": (50, LISTOPS), "task.seq_len": (2048, LRA_LOADERS),
        "task.append_eos": (True, LRA_LOADERS), "task.vocab_size": (17, LRA_LOADERS + " (+ EOS)"),
        "model.n_layers": (8, LISTOPS), "model.d_model": (128, LISTOPS), "model.prenorm": (False, LISTOPS),
        "model.norm": ("batch", LISTOPS), "model.dropout": (0.0, LISTOPS), "model.pool": ("mean", LISTOPS),
        "model.mixer.n_ssm": (None, LISTOPS + " n_ssm = d_model"), "model.mixer.ssm_lr": (0.001, LISTOPS),
        "dt_lr": (0.01, LISTOPS + " lr.dt: null"), "optimizer.lr": (0.01, LISTOPS),
        "optimizer.weight_decay": (0.05, LISTOPS), "scheduler.warmup_steps": (1000, V3_COSINE),
        "scheduler.span_steps": (80000, LISTOPS), "trainer.max_epochs": (40, LISTOPS)}),
    "text/s4": s4_lra(IMDB, **{
        "seed": (2222, IMDB), "task.batch_size": (16, IMDB), "task.val_fraction": (0.0, LRA_LOADERS),
        "task.seq_len": (4096, IMDB), "task.append_eos": (True, LRA_LOADERS),
        "task.tokenizer": ("bytes", "LRA's byte-level Text (Tay et al. 2021), kept on purpose: the header"),
        "task.vocab_size": (258, "bytes + EOS"),
        "model.n_layers": (6, IMDB), "model.d_model": (256, IMDB), "model.prenorm": (True, IMDB),
        "model.norm": ("batch", IMDB), "model.dropout": (0.0, IMDB), "model.pool": ("mean", IMDB),
        "model.mixer.n_ssm": (None, IMDB), "model.mixer.ssm_lr": (0.001, IMDB), "dt_lr": (0.01, IMDB + " lr.dt: null"),
        "optimizer.lr": (0.01, IMDB), "optimizer.weight_decay": (0.05, IMDB),
        "scheduler.warmup_steps": (1000, V3_COSINE), "scheduler.span_steps": (50000, IMDB),
        "trainer.max_epochs": (32, IMDB)}),
    "retrieval/s4": s4_lra(AAN, **{
        "seed": (2222, AAN), "task.batch_size": (64, AAN), "task.seq_len": (4000, LRA_LOADERS),
        "task.append_eos": (True, LRA_LOADERS), "task.vocab_size": (258, "bytes + EOS"),
        "model.n_layers": (6, AAN), "model.d_model": (256, AAN), "model.prenorm": (True, AAN),
        "model.norm": ("batch", AAN), "model.dropout": (0.0, AAN), "model.pool": ("mean", AAN + " retrieval decoder"),
        "model.decoder": ("mlp", S4 + "src/tasks/decoders.py RetrievalHead (nli): Linear(4H, H), act, Linear(H, 2)"),
        "model.mixer.n_ssm": (None, AAN), "model.mixer.ssm_lr": (0.001, AAN), "dt_lr": (0.01, AAN + " lr.dt: null"),
        "optimizer.lr": (0.01, AAN), "optimizer.weight_decay": (0.05, AAN), "scheduler.warmup_steps": (2500, AAN),
        "scheduler.span_steps": (50000, AAN), "trainer.max_epochs": (20, AAN)}),
    "image/s4": cifar(IMAGE, "image", IMAGE, (0.01, IMAGE + " lr.dt: null"), 900, 180000),
    "scifar/s4": cifar(SCIFAR, "scifar", V3_MODEL + " norm: layer", (0.001, V3_LAYER + " lr.dt"), 1000, 200000),
    "pathfinder/s4": s4_lra(PATHFINDER, **{
        "seed": (2222, PATHFINDER), "task.batch_size": (64, PATHFINDER), "task.mean": ([0.5], LRA_LOADERS),
        "task.std": ([0.5], LRA_LOADERS), "task.resolution": (32, PATHFINDER),
        "model.n_layers": (6, PATHFINDER), "model.d_model": (256, PATHFINDER), "model.prenorm": (True, PATHFINDER),
        "model.norm": ("batch", PATHFINDER), "model.dropout": (0.0, PATHFINDER), "model.pool": ("last", PATHFINDER),
        "model.mixer.n_ssm": (None, PATHFINDER), "model.mixer.ssm_lr": (0.001, PATHFINDER),
        "dt_lr": (0.001, PATHFINDER + " lr: 0.001"), "optimizer.lr": (0.004, PATHFINDER),
        "optimizer.weight_decay": (0.03, PATHFINDER), "scheduler.warmup_steps": (2500, PATHFINDER),
        "scheduler.span_steps": (500000, PATHFINDER), "trainer.max_epochs": (200, PATHFINDER)}),
    "pathx/s4": s4_lra(PATHX, **{
        "seed": (1112, PATHX), "task.batch_size": (16, PATHX), "task.mean": ([0.5], LRA_LOADERS),
        "task.std": ([0.5], LRA_LOADERS), "task.resolution": (128, PATHX + " pipeline pathx"),
        "model.n_layers": (6, PATHX), "model.d_model": (256, PATHX), "model.prenorm": (True, PATHX),
        "model.norm": ("batch", PATHX), "model.dropout": (0.0, PATHX), "model.pool": ("mean", PATHX + " pipeline pathx"),
        "model.mixer.n_ssm": (None, PATHX), "model.mixer.dt_min": (0.0001, PATHX),
        "model.mixer.ssm_lr": (0.0005, PATHX), "dt_lr": (0.0005, PATHX + " lr: 0.0005"),
        "optimizer.lr": (0.0005, PATHX), "optimizer.weight_decay": (0.05, PATHX),
        "scheduler.warmup_steps": (10000, PATHX), "scheduler.span_steps": (500000, PATHX),
        "trainer.max_epochs": (50, PATHX)}),
    "smnist/s4": s4_mnist(None),
    "psmnist/s4": s4_mnist("bitreversal"),
    "listops/lru": lru("listops", "listops", 0.003, 32, 128, 256, 80000, 0.5, 0.0, (0.0, 0.99), False),
    "text/lru": lru("text", "imdb", 0.004, 32, 256, 192, 50000, 0.1, 0.1, (0.5, 0.9), False),
    "retrieval/lru": lru("retrieval", "aan", 0.002, 64, 128, 256, 100000, 0.5, 0.1, (0.5, 0.9), False),
    "scifar/lru": {**lru("scifar", "cifar", 0.004, 50, 512, 384, 180000, 0.25, 0.1, (0.9, 0.999), False),
                   "optimizer.lr": (0.004, LRU + "App. C.2 (sCIFAR lr of the Table 5 sweep)")},
    "pathfinder/lru": lru("pathfinder", "pathfinder", 0.0045, 64, 192, 256, 500000, 0.25, 0.0, (0.9, 0.999), True),
    "pathx/lru": lru("pathx", "pathx", 0.0018, 32, 128, 256, 250000, 0.25, 0.0, (0.999, 0.9999), True,
                     max_phase=0.3141592653589793),
    "selective_copy/mamba": selective_copy(**{"model.mixer.d_state": (16, MAMBA_CODE), "model.mixer.expand": (2, MAMBA_CODE),
                                              "model.mixer.d_conv": (4, MAMBA_CODE)}),
    "selective_copy/s4": selective_copy(**{"model.mixer.glu": (False, T1 + " no gate"),
                                           "model.mixer.bidirectional": (False, T1)}),
    "induction/mamba": induction(**{"model.d_model": (64, S412), "optimizer.lr": (1e-3, E1),
                                    "model.mixer.d_state": (16, MAMBA_CODE)}),
    "induction/transformer": induction(**{"model.d_model": (128, S412), "optimizer.lr": (2e-4, E1),
                                          "model.mixer.num_heads": (8, S412), "model.mixer.causal": (True, S412)}),
    **{f"mqar/{m}": {
        "task.vocab_size": (8192, ZOO), "task.seq_len": (512, ZOO), "task.num_kv_pairs": (64, ZOO),
        "task.alpha": (0.01, ZOO), "task.n_train": (100000, ZOO), "task.batch_size": (128, ZOO),
        "model.d_model": (128, ZOO), "model.n_layers": (n_layers, ZOO), "model.ff": ("none", ZOO),
        "optimizer.weight_decay": (0.1, ZOO), "trainer.max_epochs": (64, ZOO),
        "sweep.optimizer.lr": ([1e-4, 10 ** -3.3333333333333335, 10 ** -2.6666666666666665, 1e-2], ZOO + " logspace"),
    } for m, n_layers in (("deltanet", 4), ("gru", 4), ("transformer", 2))},
}


def composed_value(cfg, key: str):
    """The value of `key` in a composed recipe; derived keys: dt_lr (the lr dt trains with), ssm_lr_factor
    (ssm_lr / base lr), train_steps (optimizer steps of the epochs) and sweep.<override> (a swept override's values)."""
    if key == "dt_lr":
        dt_lr = cfg.model.mixer.dt_lr
        return cfg.model.mixer.ssm_lr if dt_lr is None else dt_lr
    if key == "ssm_lr_factor":
        return cfg.model.mixer.ssm_lr / cfg.optimizer.lr
    if key == "train_steps":
        return math.ceil(cfg.task.n_train / cfg.task.batch_size) * cfg.trainer.max_epochs
    if key.startswith("sweep."):
        return [float(v) for v in str(cfg.hydra.sweeper.params[key[len("sweep."):]]).split(",")]
    value = OmegaConf.select(cfg, key, throw_on_missing=True)
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def test_every_recipe_is_pinned():
    assert sorted(PINNED) == sorted(RECIPES), "a new recipe needs its table in PINNED"


@pytest.mark.parametrize("name", sorted(PINNED))
def test_recipe_matches_its_source_key_by_key(name):
    cfg = compose_recipe(name)
    wrong = {key: (composed_value(cfg, key), value, source) for key, (value, source) in PINNED[name].items()
             if composed_value(cfg, key) != pytest.approx(value)}
    assert not wrong, "\n".join(f"{k}: composes to {got!r}, the source ({src}) says {want!r}"
                                for k, (got, want, src) in wrong.items())


@pytest.mark.parametrize("name", [n for n in sorted(PINNED) if "dt_lr" in PINNED[n]])
def test_s4_recipe_builds_the_optimizer_groups_it_states(name, tmp_path):
    """The built layer's parameters carry the learning rates of the table (dt's own, A/B/P's) and n_ssm systems."""
    cfg = compose_recipe(name, "model.n_layers=1")
    with open_dict(cfg):
        del cfg["hydra"]
    net = instantiate(cfg.model)
    mixer, pins = net.blocks[0].mixer, PINNED[name]
    groups = {n: g["lr"] for g in param_groups(mixer, lr=cfg.optimizer.lr, weight_decay=0.05) for n in g["names"]}
    assert groups["log_dt"] == pytest.approx(pins["dt_lr"][0]) and groups["B_ri"] == pytest.approx(pins["model.mixer.ssm_lr"][0])
    n_ssm = pins["model.mixer.n_ssm"][0] or cfg.model.d_model
    assert mixer.log_neg_real.shape[0] == n_ssm and mixer.dropout.tied == pins["model.tie_dropout"][0]
