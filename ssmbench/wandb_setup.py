"""wandb without surprises: offline unless a key is configured (never a login prompt), grouped by sweep, tagged
by model and task, and a resumed run continuing its wandb run."""

from __future__ import annotations

import logging
import netrc
import os
import sys
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.wandb.ai"
# Modes in which wandb talks to its server: without a key it stops at a login prompt.
ONLINE_MODES = ("online", "shared", "run")


def has_api_key() -> bool:
    """Whether wandb finds credentials without asking: WANDB_API_KEY, WANDB_IDENTITY_TOKEN_FILE, or an entry for the
    server (WANDB_BASE_URL, default api.wandb.ai) in the .netrc file that `wandb login` writes ($NETRC or ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL).netloc
    try:
        entry = netrc.netrc(os.path.expanduser(os.environ.get("NETRC") or "~/.netrc")).authenticators(host)
    except (netrc.NetrcParseError, OSError):
        return False
    return bool(entry and entry[2])


def wandb_mode() -> str:
    """'online' when an API key is configured (`has_api_key`), else 'offline'; WANDB_MODE, when set, wins, except
    that a mode that goes online without a key falls back to 'offline' with a warning. Offline never prompts for a
    login and never needs network."""
    mode = os.environ.get("WANDB_MODE")
    if not mode:
        return "online" if has_api_key() else "offline"
    if mode in ONLINE_MODES and not has_api_key():
        log.warning("WANDB_MODE=%s but no wandb API key is configured: logging offline instead "
                    "(set WANDB_API_KEY or run `wandb login` to log online)", mode)
        return "offline"
    return mode


def wandb_run_options(model: str, task: str, tags: list[str], sweep_id: str | None, job_type: str,
                      run_id: str | None = None) -> dict:
    """Keyword arguments for WandbLogger: mode, group (the sweep), tags and job type; with `run_id`, that wandb run
    id and resume="allow", so a resumed run continues the same wandb run."""
    mode = wandb_mode()
    options = {"mode": mode, "tags": [model, task, *tags], "job_type": job_type, "group": sweep_id}
    if mode in ("offline", "dryrun"):
        options["offline"] = True
    if run_id:
        options.update(id=run_id, resume="allow")
    return options


def finish_wandb() -> None:
    """End the active wandb run, so the next job of a multirun starts its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
