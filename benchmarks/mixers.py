"""Benchmark of whole mixers (one layer as conf/model/<name>.yaml builds it): forward + backward time and peak memory.

    .venv/bin/python benchmarks/mixers.py [--models lru,s5,hawk,...] [--device cpu|cuda] [--batch B] [--width H]
                                          [--length L] [--threads N] [--repeat R] [--set key=value ...]

Defaults: B=8, H=256 (the mixer's d_model), L=4096, float32, models lru, s5, hawk, mingru, minlstm (the diagonal
recurrences: linear_scan or log_linear_scan at the core, their projections and gates around it). Each mixer is
built from its config's `model.mixer` node with its defaults (`--set model.mixer.d_state=64` overrides a key of
every model that has it), seeded, in training mode; the input x (B, L, H) is a leaf and the loss is sum(y).
Columns: the mixer's parameter count, median wall time of forward + backward (after one warm-up run), the process
CPU time of the same run (CPU only; the steadier figure on a shared CPU), the time relative to the first model,
and the peak memory of one forward + backward above what was allocated before it (CUDA: the caching allocator's
peak; CPU: growth of the peak resident set of a fresh process running it once; Linux only, else nan).
"""

from __future__ import annotations

import argparse

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from measure import cpu_peak_bytes_here, peak_bytes, timed, use_device_and_threads
from ssmbench.config import config_dir, register_resolvers

MODELS = ("lru", "s5", "hawk", "mingru", "minlstm")


def build_mixer(model: str, width: int, settings: list[str], device: str) -> torch.nn.Module:
    """The mixer of conf/model/<model>.yaml at d_model = width, with the --set overrides its config has."""
    register_resolvers()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("config", [f"model={model}", "task=copy"])
    known = [s for s in settings if OmegaConf.select(cfg, s.split("=", 1)[0]) is not None]
    cfg.merge_with_dotlist(known)
    torch.manual_seed(0)
    return instantiate(cfg.model.mixer)(d_model=width).to(device)


def fwd_bwd(mixer: torch.nn.Module, x: torch.Tensor) -> None:
    x = x.detach().requires_grad_()
    mixer(x).sum().backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides, e.g. model.mixer.d_state=64")
    parser.add_argument("--peak-of", metavar="MODEL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    use_device_and_threads(args.device, args.threads)
    x = torch.randn(args.batch, args.length, args.width, generator=torch.Generator().manual_seed(0)).to(args.device)
    if args.peak_of:
        mixer = build_mixer(args.peak_of, args.width, args.set, "cpu")
        print(cpu_peak_bytes_here(lambda: fwd_bwd(mixer, x)))
        return
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"mixer forward+backward, B={args.batch}, H={args.width}, L={args.length}, float32; {name}; torch {torch.__version__}")
    header = f"{'model':>10} {'params':>9} {'wall ms':>10} {'cpu ms':>10} {'vs first':>9} {'peak MB':>9}"
    print(header)
    print("-" * len(header))
    peak_args = [f"--batch={args.batch}", f"--width={args.width}", f"--length={args.length}"]
    peak_args += ([f"--threads={args.threads}"] if args.threads else []) + (["--set", *args.set] if args.set else [])
    first = None
    for model in args.models.split(","):
        mixer = build_mixer(model, args.width, args.set, args.device)
        wall, cpu = timed(lambda: fwd_bwd(mixer, x), args.device, args.repeat)
        first = first or wall
        peak = peak_bytes(lambda: fwd_bwd(mixer, x), args.device, __file__, [model, *peak_args])
        params = sum(p.numel() for p in mixer.parameters())
        print(f"{model:>10} {params:>9} {1e3 * wall:>10.1f} {1e3 * cpu:>10.1f} {wall / first:>9.2f} {peak / 2**20:>9.1f}")


if __name__ == "__main__":
    main()
