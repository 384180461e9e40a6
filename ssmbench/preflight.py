"""Checks of a composed config that need no data and no model, run before anything is built, so a bad
value fails in one line naming its key (and what would be valid) instead of deep inside training.

    seed                                  an integer
    optimizer.lr, optimizer.muon_lr       finite and > 0;  optimizer.weight_decay, optimizer.muon_weight_decay
                                          finite and >= 0
    sizes under task.* and model.*        integers >= 1: keys named n_*, d_*, num_*, *_size, seq_len,
                                          test_seq_len, max_len (num_workers >= 0); null where the config allows it
    kernels                               auto, torch or triton (triton installed), or null
    ckpt_path                             an existing file, a readable ssmbench checkpoint, trained with
                                          the model this run builds
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from ssmbench import kernels
from ssmbench.errors import UserError

SIZE_KEY = re.compile(r"^(n_\w+|d_\w+|num_\w+|\w+_size|seq_len|test_seq_len|max_len)$")
NON_NEGATIVE = {"num_workers"}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_sizes(node: DictConfig, prefix: str) -> None:
    """Every size key at or below `node` (see the module docstring) is an integer >= 1 (or >= 0, or null)."""
    for key in node:
        name = f"{prefix}.{key}"
        if OmegaConf.is_missing(node, key):
            continue
        value = node[key]
        if isinstance(value, DictConfig):
            check_sizes(value, name)
        elif not isinstance(value, ListConfig) and value is not None and SIZE_KEY.match(str(key)):
            low = 0 if key in NON_NEGATIVE else 1
            if not _is_int(value) or value < low:
                raise UserError(f"{name}={value!r} must be an integer >= {low}")


def check_config(cfg: DictConfig) -> None:
    """The checks of the module docstring that concern values (ckpt_path aside)."""
    if not _is_int(cfg.get("seed")):
        raise UserError(f"seed={cfg.get('seed')!r} must be an integer, e.g. seed=1")
    optimizer = cfg.get("optimizer") or {}
    for key in ("lr", "muon_lr"):
        lr = optimizer.get(key)
        if lr is not None and (not _is_number(lr) or not math.isfinite(lr) or lr <= 0):
            raise UserError(f"optimizer.{key}={lr!r} must be a finite number > 0, e.g. optimizer.{key}=1e-3")
    for key in ("weight_decay", "muon_weight_decay"):
        wd = optimizer.get(key)
        if wd is not None and (not _is_number(wd) or not math.isfinite(wd) or wd < 0):
            raise UserError(f"optimizer.{key}={wd!r} must be a finite number >= 0")
    for group in ("task", "model"):
        if isinstance(cfg.get(group), DictConfig):
            check_sizes(cfg[group], group)
    try:
        kernels.parse_choice(cfg.get("kernels"))
    except ValueError as e:
        raise UserError(str(e)) from None


def load_checkpoint(path: str | Path | None, what: str = "ckpt_path") -> dict:
    """torch.load(weights_only=True, memory-mapped) of an ssmbench checkpoint, or a UserError saying what is
    wrong with it (missing, a directory, truncated or foreign, not written by ssmbench)."""
    p = Path(str(path)).expanduser()
    if not p.exists():
        raise UserError(f"checkpoint not found: {what}={path} (checkpoints are <run dir>/checkpoints/*.ckpt)")
    if not p.is_file():
        raise UserError(f"{what}={path} is a directory, not a checkpoint file (e.g. {p}/checkpoints/last.ckpt)")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        raise UserError(f"{what}={path} is not a readable PyTorch checkpoint (truncated or corrupt? "
                        f"{type(e).__name__}: {e})".replace("\n", " ")) from e
    if not isinstance(ckpt, dict) or "config" not in ckpt.get("hyper_parameters", {}) or "state_dict" not in ckpt:
        raise UserError(f"{what}={path} is not an ssmbench checkpoint (no stored run config); "
                        "train it with `ssmbench train`")
    return ckpt


def model_difference(stored: dict, current: dict, prefix: str = "model") -> str | None:
    """The first key whose literal value differs between two (unresolved) model configs (`name` and
    `_target_` first, then the others in order), described for a message, or None when they agree.
    Interpolations are compared as written."""
    for key in sorted(set(stored) | set(current), key=lambda k: (k not in ("name", "_target_"), k)):
        a, b = stored.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = model_difference(a, b, f"{prefix}.{key}")
            if found:
                return found
        elif a != b:
            return f"{prefix}.{key}: {a!r} in the checkpoint, {b!r} in this run"
    return None


def check_checkpoint_fits(path: str, cfg: DictConfig) -> dict:
    """`path` is a readable ssmbench checkpoint of the model `cfg` builds; returns it (memory-mapped)."""
    from ssmbench.deprecations import migrate_config

    ckpt = load_checkpoint(path)
    stored = migrate_config(copy.deepcopy(ckpt["hyper_parameters"]["config"]), source=str(path)).get("model") or {}
    difference = model_difference(stored, OmegaConf.to_container(cfg.model, resolve=False))
    if difference:
        raise UserError(f"ckpt_path={path} was trained with another model ({difference}); "
                        "resume it with the model settings it was trained with")
    return ckpt
