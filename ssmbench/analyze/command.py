"""`ssmbench analyze RUN_DIR|CKPT [--out DIR] [--at-init] [--batches N]`: what a trained model learned, as a
dynamical system (numbers: spectra.py; figures: plots.py; table and analysis.json: report.py).

The model is rebuilt from the config stored in the checkpoint (as `ssmbench eval` does) and loaded with its
weights; a few batches of the task's test split go through it, and forward pre-hooks on every block's mixer
capture that mixer's input, at which input-dependent layers are analysed. --at-init analyses the same
model rebuilt with the run's seed before any training (the initialization the run started from) on the
same batches.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ssmbench.analyze.report import print_table, write_json
from ssmbench.analyze.spectra import layer_numbers
from ssmbench.errors import UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UserError(f"analyze: {message} (ssmbench analyze --help)")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ssmbench analyze",
                description="Eigenvalues, timescales, decays and Jacobians of a trained model's layers: "
                            "analysis.json, PNG figures and a summary table.")
    p.add_argument("path", metavar="RUN_DIR|CKPT", help="a run directory (its checkpoints/last.ckpt) or a .ckpt file")
    p.add_argument("--out", metavar="DIR", help="output directory (default: <run dir>/analysis)")
    p.add_argument("--at-init", action="store_true", help="also analyse the model at initialization (the run's seed)")
    p.add_argument("--batches", type=int, default=2, metavar="N", help="test batches fed through the model (default 2)")
    return p


def find_checkpoint(path: str) -> Path:
    """The checkpoint `path` names: the file itself, or a run directory's checkpoints/last.ckpt (else its
    newest *.ckpt)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"analyze: {path} does not exist; give a run directory (outputs/<task>/<model>/<date>...) "
                        "or a checkpoint file")
    if p.is_file():
        return p
    last = p / "checkpoints" / "last.ckpt"
    if last.is_file():
        return last
    found = sorted((p / "checkpoints").glob("*.ckpt"), key=lambda f: f.stat().st_mtime)
    if not found:
        raise UserError(f"analyze: no checkpoint in {p}/checkpoints; give a run directory of a run that "
                        "finished at least one epoch, or a .ckpt file")
    return found[-1]


def rebuild(ckpt_path: Path, out: Path, trained: bool):
    """(datamodule, model, run config) of the checkpoint's run; the model with its trained weights, or
    (trained=False) as initialized with the run's seed."""
    from omegaconf import OmegaConf

    from ssmbench.build import build_modules
    from ssmbench.deprecations import migrate_config
    from ssmbench.lit import complete_metric_states
    from ssmbench.preflight import load_checkpoint

    ckpt = load_checkpoint(ckpt_path, what="analyze")
    cfg = migrate_config(OmegaConf.create(ckpt["hyper_parameters"]["config"]), source=str(ckpt_path))
    cfg.paths.output_dir = str(out)
    dm, net, lit = build_modules(cfg)
    if trained:
        complete_metric_states(lit, ckpt["state_dict"])
        lit.load_state_dict(ckpt["state_dict"])
    dm.setup("test")
    return dm, net.eval(), cfg


def test_batches(dm, n: int) -> list[tuple]:
    """The first n batches of the test split."""
    batches = []
    for batch in dm.test_dataloader():
        batches.append(batch)
        if len(batches) == n:
            break
    return batches


def mixer_inputs(net, batches: list[tuple]) -> list[torch.Tensor]:
    """Each block's mixer input over `batches`, concatenated along the batch: one (B, L, D) per block."""
    captured: list[list[torch.Tensor]] = [[] for _ in net.blocks]
    hooks = [block.mixer.register_forward_pre_hook(lambda _m, args, i=i: captured[i].append(args[0].detach()))
             for i, block in enumerate(net.blocks)]
    try:
        with torch.no_grad():
            for batch in batches:
                net(batch[0], lengths=batch[2] if len(batch) > 2 else None)
    finally:
        for h in hooks:
            h.remove()
    return [torch.cat(xs) for xs in captured]


def analyse(net, batches: list[tuple], seq_len: int) -> list[dict]:
    """One entry per block: its index, its mixer's class and `layer_numbers`."""
    inputs = mixer_inputs(net, batches)
    return [{"layer": i, "kind": type(block.mixer).__name__, **layer_numbers(block.mixer, x, seq_len)}
            for i, (block, x) in enumerate(zip(net.blocks, inputs))]


def analyze(argv: list[str]) -> dict:
    """Run `ssmbench analyze` with arguments `argv`; returns what analysis.json holds. Errors are UserErrors."""
    if any(a in ("-h", "--help") for a in argv):
        parser().print_help()
        return {}
    args = parser().parse_args(argv)
    if args.batches < 1:
        raise UserError(f"analyze: --batches {args.batches} must be at least 1")
    ckpt_path = find_checkpoint(args.path)
    run_dir = ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent
    out = Path(args.out) if args.out else run_dir / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    dm, net, cfg = rebuild(ckpt_path, out, trained=True)
    batches = test_batches(dm, args.batches)
    seq_len = int(getattr(dm, "seq_len", None) or batches[0][0].shape[-1])
    states = {"trained": analyse(net, batches, seq_len)}
    if args.at_init:
        states["init"] = analyse(rebuild(ckpt_path, out, trained=False)[1], batches, seq_len)
    results = {"checkpoint": str(ckpt_path.resolve()), "model": cfg.model.get("name"), "task": cfg.task.get("name"),
               "seed": cfg.get("seed"), "seq_len": seq_len, "n_sequences": sum(len(b[0]) for b in batches),
               "states": states}
    from ssmbench.analyze.plots import write_plots

    results["figures"] = write_plots(states, seq_len, out)
    write_json(results, out / "analysis.json")
    print_table(results)
    return results
