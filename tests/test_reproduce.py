"""benchmarks/reproduce.py: the report is read from run directories and its verdicts follow from the checks
(fabricated runs of the parity finding, no training)."""

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import reproduce  # noqa: E402
from findings import FINDINGS  # noqa: E402

PARITY = next(f for f in FINDINGS if f.key == "grazzi")


def parity_run(path: Path, model: str, beta_range: tuple, seed: int, test_acc: float) -> None:
    """A run directory of the parity sweep as `ssmbench train -m` leaves it."""
    (path / ".hydra").mkdir(parents=True)
    config = {"seed": seed, "task": {"name": "parity", "seq_len": 16},
              "model": {"name": model, "mixer": {"beta_range": list(beta_range)}}, "optimizer": {"lr": 1e-2},
              "paths": {"output_dir": str(path)}}
    OmegaConf.save(OmegaConf.create(config), path / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"choices": {"model": model, "task": "parity"}}}}),
                   path / ".hydra" / "hydra.yaml")
    overrides = [f"model={model}", f"model.mixer.beta_range=[{beta_range[0]},{beta_range[1]}]", f"seed={seed}"]
    OmegaConf.save(OmegaConf.create(overrides), path / ".hydra" / "overrides.yaml")
    (path / "results.json").write_text(json.dumps({
        "status": "completed", "model": model, "task": "parity", "seed": seed, "wall_time_s": 10.0 + seed,
        "metrics": {"test/acc": test_acc, "val/acc_best": test_acc}}))


def write_parity_sweep(root: Path, accuracies: dict) -> None:
    job = 0
    for (model, beta_range), values in accuracies.items():
        for seed, acc in enumerate(values, 1):
            parity_run(root / "grazzi" / "parity" / str(job), model, beta_range, seed, acc)
            job += 1


def test_verdict_follows_the_checks():
    assert reproduce.verdict([("a", True), ("b", True)]) == "reproduced"
    assert reproduce.verdict([("a", True), ("b", False)]) == "partly reproduced"
    assert reproduce.verdict([("a", False), ("b", False)]) == "not reproduced"


def test_report_reads_the_measured_numbers_and_decides_the_verdict(tmp_path):
    write_parity_sweep(tmp_path, {("deltanet", (0, 1)): [0.50, 0.52, 0.49], ("deltanet", (0, 2)): [0.97, 0.95, 0.99],
                                  ("gated_deltanet", (0, 1)): [0.49, 0.48, 0.50],
                                  ("gated_deltanet", (0, 2)): [0.99, 1.00, 0.98]})
    text = reproduce.report([PARITY], tmp_path)
    assert "| 1 | [Negative eigenvalues unlock parity](#1-grazzi) | reproduced |" in text
    assert "| 0.970 ± 0.020 |" in text and "**0.990 ± 0.010**" in text   # measured means, column best in bold
    assert "0.503 ± 0.015" in text
    assert "12 runs, 12 s per run (min 11, max 13)" in text
    assert "- ✓ with beta in [0, 2]" in text and "ssmbench train -m model=deltanet,gated_deltanet" in text


def test_a_finding_fails_its_check_when_the_measurement_says_so(tmp_path):
    write_parity_sweep(tmp_path, {("deltanet", (0, 1)): [0.50, 0.52, 0.49], ("deltanet", (0, 2)): [0.60, 0.55, 0.58],
                                  ("gated_deltanet", (0, 1)): [0.49, 0.48, 0.50],
                                  ("gated_deltanet", (0, 2)): [0.99, 1.00, 0.98]})
    text = reproduce.report([PARITY], tmp_path)
    assert "| partly reproduced |" in text and "- ✗ with beta in [0, 2]" in text


def test_a_finding_without_runs_says_how_to_make_them(tmp_path):
    text = reproduce.report(FINDINGS, tmp_path)
    assert text.count("not reproduced |") == len(FINDINGS)
    assert "run `python benchmarks/reproduce.py run`" in text
