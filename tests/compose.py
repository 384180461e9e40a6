"""Composing ssmbench configs in-process (no subprocess), as `ssmbench train` would."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from ssmbench.config import config_dir, register_resolvers


@contextmanager
def composed(*overrides: str, output_dir: str | Path = "unused"):
    """The composed config for `ssmbench train *overrides`, with paths.output_dir set to `output_dir`."""
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg: DictConfig = compose("config", list(overrides))
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
        yield cfg
    GlobalHydra.instance().clear()

