"""wandb without surprises: offline unless a key is configured, grouped by sweep, tagged by model and task."""

from __future__ import annotations

import netrc
import os
import sys

WANDB_HOST = "api.wandb.ai"


def wandb_mode() -> str:
    """'online' when an API key is configured (WANDB_API_KEY or ~/.netrc from `wandb login`), else
    'offline'; WANDB_MODE, when set, wins. Offline never prompts for a login and never needs network."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators(WANDB_HOST):
            return "online"
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        pass
    return "offline"


def wandb_run_options(model: str, task: str, tags: list[str], sweep_id: str | None, job_type: str) -> dict:
    """Keyword arguments for WandbLogger: mode, group (the sweep), tags and job type."""
    mode = wandb_mode()
    options = {"mode": mode, "tags": [model, task, *tags], "job_type": job_type, "group": sweep_id}
    if mode in ("offline", "dryrun"):
        options["offline"] = True
    return options


def finish_wandb() -> None:
    """End the active wandb run, so the next job of a multirun starts its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
