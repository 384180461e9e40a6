"""Locating conf/, OmegaConf resolvers, and printing a composed config."""

from __future__ import annotations

import math
import secrets
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

PACKAGE_DIR = Path(__file__).resolve().parent
# conf/ lives at the repo's top level and is shipped inside the wheel as ssmbench/conf.
CONFIG_DIRS = (PACKAGE_DIR / "conf", PACKAGE_DIR.parent / "conf")
# Folders of conf/ that are not choices on the command line.
NOT_GROUPS = {"backbone", "hydra"}


def config_dir() -> Path:
    """The directory of the primary config `config.yaml` (inside the installed package or the repo)."""
    for d in CONFIG_DIRS:
        if (d / "config.yaml").is_file():
            return d
    raise FileNotFoundError(f"ssmbench: no config.yaml in {[str(d) for d in CONFIG_DIRS]}; reinstall ssmbench")


def config_groups(root: Path | None = None) -> dict[str, list[str]]:
    """Every config group under conf/ with its options, e.g. {"model": ["gru", "s4"], "experiment": ["lra/s4_listops"]};
    files named _*.yaml are parts other configs of the group include, not options."""
    root = root or config_dir()
    groups: dict[str, list[str]] = {}
    for group_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in NOT_GROUPS):
        groups[group_dir.name] = sorted(str(f.relative_to(group_dir).with_suffix("")) for f in group_dir.rglob("*.yaml")
                                        if not f.name.startswith("_"))
    return groups


def register_resolvers() -> None:
    """`${add:a,b,...}` and `${mul:a,b,...}`: the sum and the product of numbers, and `${factorial:n}`, n!, for
    task metadata derived from other keys (vocab_size = n_symbols + 2, seq_len = resolution * resolution,
    the n! permutations of the word problem). `${longest:a,b,...}`: the largest of the values that are not null,
    the length a model sizes its tables and kernels by (the longest of seq_len and a synthetic task's test_seq_len).
    `${unique:}`: 6 random hex digits, drawn once per config (cached like Hydra's `${now:}`, whose cache a
    multirun copies to every job), that make run directories started in the same second distinct."""
    if not OmegaConf.has_resolver("add"):
        OmegaConf.register_new_resolver("add", lambda *xs: sum(xs))
    if not OmegaConf.has_resolver("mul"):
        OmegaConf.register_new_resolver("mul", lambda *xs: math.prod(xs))
    if not OmegaConf.has_resolver("factorial"):
        OmegaConf.register_new_resolver("factorial", math.factorial)
    if not OmegaConf.has_resolver("longest"):
        OmegaConf.register_new_resolver("longest", lambda *xs: max(x for x in xs if x is not None))
    if not OmegaConf.has_resolver("unique"):
        OmegaConf.register_new_resolver("unique", lambda: secrets.token_hex(3), use_cache=True)


def print_config_tree(cfg: DictConfig, order: tuple[str, ...] = ("task", "model", "trainer", "optimizer", "scheduler")) -> None:
    """Print the composed config as a rich tree, the main groups first."""
    from rich import print as rprint
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", guide_style="dim")
    keys = [k for k in order if k in cfg] + [k for k in cfg if k not in order]
    for key in keys:
        node = cfg[key]
        text = OmegaConf.to_yaml(node, resolve=True) if isinstance(node, DictConfig) else str(node)
        tree.add(f"[bold]{key}[/]").add(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
    rprint(tree)
