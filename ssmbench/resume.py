"""`ssmbench train resume=<run dir> [key=value ...]`: continue a run in its own directory.

The run continues with the config it was composed with (`<run dir>/.hydra/config.yaml`), changed only
by the key=value overrides given on the resume command line (e.g. trainer.max_epochs=20 to train
longer; config groups such as model=lru are refused: that would be another run). Training continues
from `<run dir>/checkpoints/last.ckpt` (from scratch in the same directory if the run died before its
first checkpoint): best-checkpoint tracking, the wandb run and results.json continue too.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ssmbench.errors import UserError

RESUME_KEY = "resume"


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def resume_arguments(run_dir: str, overrides: list[str], groups: list[str]) -> list[str]:
    """The Hydra arguments that continue `run_dir` with `overrides` (checked: key=value only)."""
    from ssmbench.compare.runs import effective_status
    from ssmbench.runinfo import read_results

    path = Path(run_dir).expanduser().resolve()
    if not (path / ".hydra" / "config.yaml").is_file():
        raise UserError(f"resume={run_dir}: not a run directory (no .hydra/config.yaml); "
                        "give a directory that `ssmbench train` wrote, e.g. outputs/<task>/<model>/<date>_<time>_<id>")
    for override in overrides:
        key = _key(override)
        if key in groups or key.split("/")[0] in groups or "=" not in override:
            raise UserError(f"resume={run_dir} continues that run with its own config; {override!r} would make "
                            "another run (only key=value overrides such as trainer.max_epochs=20 are allowed)")
        if key.startswith("hydra.") or key == "ckpt_path":
            raise UserError(f"resume={run_dir} writes into that run directory from its last.ckpt; "
                            f"{override!r} cannot be combined with it")
    results = read_results(path / "results.json")
    if results and effective_status(results, updated=(path / "results.json").stat().st_mtime) == "running":
        raise UserError(f"resume={run_dir}: that run is still running (pid {results.get('pid')} on "
                        f"{results.get('host')}); stop it first")
    return [*overrides, f"{RESUME_KEY}={path}", f"hydra.run.dir={path}", "hydra.output_subdir=null"]


def resumed_config(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The stored config of the run being resumed, with the command line's key=value `overrides` applied
    (their values as `cfg`, the freshly composed config, parsed them). When they change anything and
    pass the preflight checks, rank zero updates the run's .hydra/config.yaml and overrides.yaml, so the
    directory keeps telling the truth. Keys renamed since the run was composed are read under their new
    names (`migrate_config`)."""
    from lightning.pytorch.utilities import rank_zero_only

    from ssmbench.deprecations import migrate_config
    from ssmbench.preflight import check_config

    run_dir = Path(cfg[RESUME_KEY])
    hydra_dir = run_dir / ".hydra"
    stored = migrate_config(OmegaConf.load(hydra_dir / "config.yaml"), source=str(hydra_dir / "config.yaml"))
    changes = [o for o in overrides if _key(o) != RESUME_KEY]
    for override in changes:
        key = _key(override)
        OmegaConf.update(stored, key, OmegaConf.select(cfg, key), merge=False, force_add=True)
    if changes and rank_zero_only.rank == 0:
        check_config(stored)
        stored[RESUME_KEY] = None
        OmegaConf.save(stored, hydra_dir / "config.yaml")
        previous = OmegaConf.load(hydra_dir / "overrides.yaml") if (hydra_dir / "overrides.yaml").is_file() else []
        OmegaConf.save(OmegaConf.create([*previous, *changes]), hydra_dir / "overrides.yaml")
    stored[RESUME_KEY] = str(run_dir)
    return stored
