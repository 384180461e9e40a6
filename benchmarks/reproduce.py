"""Reproduce published mechanistic findings with ssmbench on the CPU, and write docs/reproductions.md from the runs.

    python benchmarks/reproduce.py run [--only zoology,mamba] [--jobs 2] [--root outputs/reproductions]
    python benchmarks/reproduce.py report [--root outputs/reproductions] [--out docs/reproductions.md]
    python benchmarks/reproduce.py commands            # print every command `run` would start

`run` starts, for every finding of benchmarks/findings.py, its `ssmbench train -m` sweeps into
<root>/<finding>/<sweep>/ (one CPU thread per process, `--jobs` processes at once), then tests every job's best
checkpoint at the sweep's extra lengths (`ssmbench eval`, into <job>/eval_<L>/). A sweep whose directory holds a
`done` marker is skipped, so an interrupted `run` continues where it stopped (delete the directory to redo one).
`report` reads the run directories (results.json, metrics.csv) and writes the report: every number in it is read
from a run, the paper's values are quoted as the paper's, and each verdict follows from the checks it lists.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from findings import FINDINGS, Finding, FindingRuns, Sweep  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO / "outputs" / "reproductions"
DEFAULT_OUT = REPO / "docs" / "reproductions.md"


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", WANDB_MODE="offline", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _ssmbench(args: list[str], log: Path) -> int:
    """Run `ssmbench *args` (args[0] == "ssmbench") with its output appended to `log`; the exit code."""
    with log.open("a") as f:
        f.write(f"$ {shlex.join(args)}\n")
        f.flush()
        return subprocess.run([sys.executable, "-m", "ssmbench", *args[1:]], cwd=REPO, env=_env(), stdout=f,
                              stderr=subprocess.STDOUT).returncode


def eval_commands(sweep: Sweep, sweep_dir: Path) -> list[tuple[Path, list[str]]]:
    """(eval dir, command) for every completed job of the sweep and every eval length not yet tested."""
    commands = []
    for results_path in sorted(sweep_dir.glob("*/results.json")):
        results = json.loads(results_path.read_text())
        if results.get("status") != "completed" or not results.get("best_checkpoint"):
            continue
        for length in sweep.evals:
            out = results_path.parent / f"eval_{length}"
            if (out / "results.json").is_file():
                continue
            commands.append((out, ["ssmbench", "eval", f"ckpt_path={results['best_checkpoint']}",
                                   f"task.test_seq_len={length}", f"model.max_len={length}", "logger=csv",
                                   "print_config=false", f"hydra.run.dir={out}"]))
    return commands


def run_sweep(finding: Finding, sweep: Sweep, root: Path) -> str:
    sweep_dir = root / finding.key / sweep.name
    log = root / finding.key / f"{sweep.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    if not (sweep_dir / "done").is_file():
        code = _ssmbench(sweep.command(sweep_dir), log)
        if code != 0:
            return f"{finding.key}/{sweep.name}: failed (exit {code}), see {log}"
        (sweep_dir / "done").write_text(f"{time.time() - start:.0f} s\n")
    failed = [out.name for out, command in eval_commands(sweep, sweep_dir) if _ssmbench(command, log) != 0]
    note = f", evals failed: {failed}" if failed else ""
    return f"{finding.key}/{sweep.name}: done in {time.time() - start:.0f} s{note}"


def run(findings: list[Finding], root: Path, jobs: int) -> None:
    tasks = [(f, s) for f in findings for s in f.sweeps]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for line in pool.map(lambda fs: run_sweep(fs[0], fs[1], root), tasks):
            print(line, flush=True)


def verdict(checks: list[tuple[str, bool]]) -> str:
    held = sum(ok for _, ok in checks)
    if held == len(checks):
        return "reproduced"
    return "not reproduced" if held == 0 else "partly reproduced"


def report(findings: list[Finding], root: Path) -> str:
    shown = root.relative_to(REPO) if root.is_relative_to(REPO) else root
    parts = [
        "# Published findings reproduced with ssmbench\n",
        f"Written by `python benchmarks/reproduce.py report` on {date.today().isoformat()} from the run directories "
        f"under `{shown}/`, which `python benchmarks/reproduce.py run` trains (CPU, one thread per run). Every "
        "measured number below is read from a run's results.json or metrics.csv; the papers' numbers are quoted as "
        "the papers'. Each verdict follows from the checks listed under it: *reproduced* when all hold, *partly* when "
        "some do, *not reproduced* when none does. The settings are CPU-sized (stated per finding), so the check "
        "thresholds test the papers' qualitative claims, not their exact figures.\n",
        "Each table cell is the mean ± sample std over seeds of test accuracy (`ssmbench compare PATH --pivot ROW,COL` "
        "prints the same table from the sweep directory); **bold** is the best of its column.\n",
        "| # | finding | verdict |", "|---|---|---|",
    ]
    sections = []
    for number, finding in enumerate(findings, 1):
        found = FindingRuns.load(root / finding.key, finding)
        body, checks = finding.report(found)
        outcome = verdict(checks)
        parts.append(f"| {number} | [{finding.title}](#{number}-{finding.key}) | {outcome} |")
        commands = "\n".join("    " + shlex.join(s.command(shown / finding.key / s.name)) for s in finding.sweeps)
        evals = [s for s in finding.sweeps if s.evals]
        if evals:
            commands += "\n" + "\n".join(
                f"    ssmbench eval ckpt_path=<job>/checkpoints/<best>.ckpt task.test_seq_len=L model.max_len=L   "
                f"# L in {list(s.evals)}" for s in evals)
        marks = "\n".join(f"- {'✓' if ok else '✗'} {statement}" for statement, ok in checks)
        sections.append(
            f"\n<a id=\"{number}-{finding.key}\"></a>\n## {number}. {finding.title}\n\n"
            f"**Claim.** {finding.claim}\n\n**Source.** {finding.source}\n\n"
            f"**Published (the paper's numbers).** {finding.published}\n\n**Our setting.** {finding.setting}\n\n"
            f"**Commands.**\n\n{commands}\n\n**Measured here.**\n\n{body}\n"
            f"**Verdict: {outcome}.**\n\n{marks}\n")
    return "\n".join(parts) + "\n" + "".join(sections)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("run", "report", "commands"))
    p.add_argument("--only", help="comma-separated finding keys: " + ",".join(f.key for f in FINDINGS))
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="where the runs go (default outputs/reproductions)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the report (default docs/reproductions.md)")
    p.add_argument("--jobs", type=int, default=1, help="sweeps trained at once, one CPU thread each (default 1)")
    args = p.parse_args(argv)
    findings = FINDINGS
    if args.only:
        keys = args.only.split(",")
        unknown = sorted(set(keys) - {f.key for f in FINDINGS})
        if unknown:
            p.error(f"unknown finding {unknown}; known: {[f.key for f in FINDINGS]}")
        findings = [f for f in FINDINGS if f.key in keys]
    root = args.root.resolve()
    if args.action == "commands":
        for f in findings:
            for s in f.sweeps:
                print(shlex.join(s.command(root / f.key / s.name)))
    elif args.action == "run":
        run(findings, root, args.jobs)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report(findings, root))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
