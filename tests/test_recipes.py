"""Every published recipe in conf/experiment/<task>/<model>.yaml composes against the real task and
model configs, resolves, builds its model, and says where each of its numbers comes from.

Parametrized over the files, so a new recipe is covered as soon as it exists (no training, no data)."""

import re

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from ssmbench.config import config_dir, config_groups, register_resolvers

RECIPES = config_groups().get("experiment", [])
SCALAR_LINE = re.compile(r"^\s*[A-Za-z_][\w.]*:\s*[^\s#{\[][^#]*$")  # `key: value` without a comment


def compose_recipe(name: str, *overrides: str):
    register_resolvers()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            cfg = compose("config", [f"experiment={name}", *overrides], return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    return cfg


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
