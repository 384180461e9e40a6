"""Training throughput of every model of the zoo (conf/model/*.yaml) as `ssmbench train` trains it: samples/s.

    .venv/bin/python benchmarks/train_throughput.py [--device cpu|cuda] [--models s4,lru,...] [--steps N]
        [--warmup N] [--quick] [--kernels auto|torch|triton] [--markdown]
        [--batch B] [--length L] [--d-model D] [--layers N]

The workload has the shape of sCIFAR (conf/task/scifar.yaml: real input of 3 channels per step, 10 classes, one
label per sequence) with random data: x ~ N(0, 1) of shape (B, L, 3) (the task's inputs are standardized pixels)
and uniform labels, held in memory, so nothing is downloaded. Sizes (issue 17):
    cuda   B=50, L=1024, d_model 512, 6 layers, trainer=gpu (bf16-mixed)
    cpu    B=8,  L=256,  d_model 64,  2 layers, trainer=cpu (32-true)
--batch, --length, --d-model, --layers change them.

How. Each model's run is composed from conf/ as `ssmbench train model=<m> task=scifar trainer=gpu|cpu logger=csv
model.d_model=D model.n_layers=N task.batch_size=B task.seq_len=L` would compose it, so every model default
(mixer settings, per-parameter lrs, optimizer, scheduler, dropout) is the real one, and built by ssmbench.build
(build_modules, build_trainer) as ssmbench.train builds it, the random datamodule taking the task's
place. The run directory is a temporary one. Training is Lightning's Trainer.fit with the trainer config
(precision, gradient clipping, ...), the training callbacks of `ssmbench train` (throughput and learning-rate
monitors, the non-finite guard, random states) and the CSV logger; left out are what only prints or writes
files (progress bar, model summary, checkpoints) and validation, none of which runs during a training step.
Fit runs warmup + steps optimizer steps (one epoch); the clock (time.perf_counter, with CUDA synchronized)
starts when warm-up step `warmup` has ended (compiles, autotuning, cuDNN's algorithm search and the optimizer
state are behind it) and is read after every further `steps` steps, --windows times (default 3), so each window
covers `steps` whole iterations of the loop: fetching the batch, moving it to the device, forward, loss,
backward, the callbacks and the optimizer step.

Columns, from the median window: samples/s = steps * B / seconds, ms/step = seconds / steps; spread = (slowest -
fastest window) / median window (how steady the machine was); peak MiB = the CUDA caching allocator's
peak during the timed steps (weights, gradients, optimizer state and activations; "-" on a CPU), params = the
model's parameter count. A model that fails (out of memory, a size its mixer does not take, ...) gets its
one-line error in its row and the next model runs. --markdown prints the table as markdown (for the README).
--kernels sets SSMBENCH_KERNELS for the runs (ssmbench.kernels), to compare the Triton kernels with the torch
paths; without it the environment's setting holds (auto when unset). --quick: 1 warm-up step and one window of 2 steps.
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import os
import tempfile
import time
from typing import Iterator, NamedTuple

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from torch.utils.data import TensorDataset

from measure import synchronize, use_device_and_threads
from ssmbench import kernels
from ssmbench.build import build_modules, build_trainer, count_parameters
from ssmbench.config import config_dir, config_groups, register_resolvers
from ssmbench.data.base import SequenceDataModule
from ssmbench.preflight import check_config

TASK = "scifar"
# Callbacks of conf/callbacks/default.yaml that act during training steps (the others print or write checkpoints).
CALLBACKS = ("lr_monitor", "throughput")
TRAINER = {"cuda": "gpu", "cpu": "cpu"}


class Size(NamedTuple):
    batch: int
    length: int
    d_model: int
    n_layers: int


SIZES = {"cuda": Size(50, 1024, 512, 6), "cpu": Size(8, 256, 64, 2)}  # cuda: issue 17's sCIFAR shape


class Row(NamedTuple):
    model: str
    samples_per_s: float = math.nan
    ms_per_step: float = math.nan
    peak_mib: float | None = None
    params: int = 0
    error: str | None = None
    spread: float = 0.0  # (slowest - fastest window) / median window


class RandomSequences(SequenceDataModule):
    """The task's metadata with `n` random examples: x ~ N(0, 1) of shape (n, seq_len, d_input), labels uniform
    in [0, n_classes); the same dataset serves as every split."""

    def __init__(self, *, n: int, **metadata):
        super().__init__(**metadata)
        self.n = n

    def load_splits(self) -> tuple[TensorDataset, TensorDataset, TensorDataset]:
        g = torch.Generator().manual_seed(self.seed)
        data = TensorDataset(torch.randn(self.n, self.seq_len, self.d_input, generator=g),
                             torch.randint(0, self.n_classes, (self.n,), generator=g))
        return data, data, data


class StepClock(L.Callback):
    """Wall seconds of `windows` consecutive windows of `steps` training batches each, after `warmup` batches
    (CUDA synchronized at every window's ends), and the CUDA allocator's peak bytes over them."""

    def __init__(self, warmup: int, steps: int, windows: int, device: str):
        self.warmup, self.steps, self.windows, self.device = warmup, steps, windows, device
        self.batches = 0
        self.marks: list[float] = []
        self.peak_bytes: float | None = None

    @property
    def total(self) -> int:
        return self.warmup + self.windows * self.steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1
        if self.batches < self.warmup or (self.batches - self.warmup) % self.steps:
            return
        synchronize(self.device)
        if self.batches == self.warmup and self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        self.marks.append(time.perf_counter())
        if self.batches == self.total and self.device == "cuda":
            self.peak_bytes = float(torch.cuda.max_memory_allocated())

    def seconds(self) -> list[float]:
        """The wall seconds of each window."""
        return [end - start for start, end in zip(self.marks, self.marks[1:])]


def run_overrides(model: str, device: str, size: Size, total_steps: int) -> list[str]:
    """The `ssmbench train` overrides of one run: model, task, trainer, size; fit stops after `total_steps`."""
    return [f"model={model}", f"task={TASK}", f"trainer={TRAINER[device]}", "logger=csv",
            f"model.d_model={size.d_model}", f"model.n_layers={size.n_layers}",
            f"task.batch_size={size.batch}", f"task.seq_len={size.length}",
            f"+trainer.max_steps={total_steps}", "+trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0",
            "+trainer.enable_progress_bar=false", "+trainer.enable_checkpointing=false"]


def measure_model(model: str, device: str, size: Size, steps: int, warmup: int, windows: int = 1) -> Row:
    """Train `model` for warmup + windows * steps steps as `ssmbench train` would (module docstring) and time each
    window of `steps` after the warm-up: the Row of the median window, with the spread of the windows."""
    register_resolvers()
    with tempfile.TemporaryDirectory() as out, initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("config", run_overrides(model, device, size, warmup + windows * steps))
        with open_dict(cfg):
            cfg.paths.output_dir = out
        check_config(cfg)
        metadata = {k: cfg.task[k] for k in ("name", "n_classes", "seq_len", "d_input", "target", "causal", "paired",
                                             "batch_size", "seed")}
        dm, net, lit = build_modules(cfg, RandomSequences(n=(warmup + windows * steps) * size.batch, **metadata))
        _, trainer = build_trainer(cfg, "train", only=CALLBACKS)
        clock = StepClock(warmup, steps, windows, device)
        trainer.callbacks.append(clock)
        trainer.fit(lit, datamodule=dm)
    if clock.batches != clock.total:
        raise RuntimeError(f"fit ended after {clock.batches} of {clock.total} steps")
    seconds = sorted(clock.seconds())
    median = seconds[len(seconds) // 2]
    return Row(model, steps * size.batch / median, 1e3 * median / steps,
               None if clock.peak_bytes is None else clock.peak_bytes / 2**20, count_parameters(net)["params"],
               spread=(seconds[-1] - seconds[0]) / median)


def measured_or_failed(model: str, device: str, size: Size, steps: int, warmup: int, windows: int) -> Row:
    """measure_model's Row, or, where it raises, a Row with the first line of the error."""
    try:
        row = measure_model(model, device, size, steps, warmup, windows)
    except Exception as e:  # noqa: BLE001 - any failure of one model is reported in its row
        row = Row(model, error=f"{type(e).__name__}: {e}".splitlines()[0])
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return row


def throughput_rows(models: list[str], device: str, size: Size, steps: int, warmup: int,
                    windows: int = 1) -> Iterator[Row]:
    """One Row per model, in order, each as soon as it is measured; a model that raises gets its error in its
    Row and the others still run."""
    if steps < 1 or warmup < 1 or windows < 1:
        raise ValueError(f"steps={steps}, warmup={warmup}, windows={windows}: give at least 1 of each (the first "
                         "step builds the optimizer state and is never timed)")
    return (measured_or_failed(model, device, size, steps, warmup, windows) for model in models)


HEADER = ("model", "samples/s", "ms/step", "spread", "peak MiB", "params")


def header_lines(width: int, markdown: bool) -> list[str]:
    """The table's head; `width` is that of the model column (plain text)."""
    if markdown:
        return ["| " + " | ".join(HEADER) + " |", "|---|" + "---:|" * (len(HEADER) - 1)]
    line = f"{HEADER[0]:<{width}} " + " ".join(f"{h:>11}" for h in HEADER[1:])
    return [line, "-" * len(line)]


def format_row(row: Row, width: int, markdown: bool) -> str:
    """One line of the table: the numbers, or the model's error."""
    if row.error:
        cells = [row.model, "error: " + (row.error.replace("|", "\\|") if markdown else row.error), "", "", "", ""]
    else:
        peak = "-" if row.peak_mib is None else f"{row.peak_mib:.0f}"
        cells = [row.model, f"{row.samples_per_s:.1f}", f"{row.ms_per_step:.1f}", f"{100 * row.spread:.0f}%", peak,
                 f"{row.params:,}"]
    if markdown:
        return "| " + " | ".join(cells) + " |"
    if row.error:
        return f"{row.model:<{width}} {cells[1]}"
    return f"{row.model:<{width}} " + " ".join(f"{c:>11}" for c in cells[1:])


def precision_of(device: str) -> str:
    """trainer.precision of the trainer config the runs on `device` use."""
    register_resolvers()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("config", [f"trainer={TRAINER[device]}"]).trainer.precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default=",".join(config_groups()["model"]), help="default: every conf/model")
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per window")
    parser.add_argument("--windows", type=int, default=3, help="timed windows (the median is reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed optimizer steps before them (at least 1)")
    parser.add_argument("--quick", action="store_true", help="--warmup 1 --steps 2 --windows 1")
    parser.add_argument("--kernels", choices=kernels.MODES, help="SSMBENCH_KERNELS for the runs")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    for flag, field in (("--batch", "batch"), ("--length", "length"), ("--d-model", "d_model"), ("--layers", "n_layers")):
        parser.add_argument(flag, type=int, dest=field,
                            help=f"default: {getattr(SIZES['cuda'], field)} on cuda, {getattr(SIZES['cpu'], field)} on cpu")
    args = parser.parse_args()
    use_device_and_threads(args.device, None)
    if args.kernels:
        os.environ["SSMBENCH_KERNELS"] = args.kernels
    steps, warmup, windows = (2, 1, 1) if args.quick else (args.steps, args.warmup, args.windows)
    default = SIZES[args.device]
    size = Size(*(getattr(default if getattr(args, f) is None else args, f) for f in Size._fields))
    models = args.models.split(",")
    try:
        rows = throughput_rows(models, args.device, size, steps, warmup, windows)
    except ValueError as e:
        parser.error(str(e))
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no "GPU available: ..." lines per model
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"ssmbench train throughput, task={TASK} shape with random data: B={size.batch}, L={size.length}, "
          f"d_model={size.d_model}, n_layers={size.n_layers}; trainer={TRAINER[args.device]} "
          f"({precision_of(args.device)}); {warmup} warm-up steps, then the median of {windows} windows of "
          f"{steps} steps; "
          f"SSMBENCH_KERNELS={kernels.mode()}; {name}; torch {torch.__version__}")
    width = max(map(len, [HEADER[0], *models]))
    print("\n".join(header_lines(width, args.markdown)), flush=True)
    for row in rows:
        print(format_row(row, width, args.markdown), flush=True)


if __name__ == "__main__":
    main()
