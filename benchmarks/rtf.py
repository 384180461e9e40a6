"""RTF kernel generation: its cost does not grow with the state size N, next to S4's kernel.

    .venv/bin/python benchmarks/rtf.py [--device cpu|cuda] [--repeat R] [--threads T]

Forward + backward (of the sum of the kernel) of the (H, L) kernel, H=256 channels, L=4096, float32:
`rtf_kernel` for N=64 and N=1024 (random coefficients a with sum |a_i| = 0.5, random b), and S4's layer
kernel (mode dplr, N=64, `S4Mixer.ssm_kernel`, as benchmarks/s4_kernel.py builds it). Median wall and
process CPU seconds of --repeat runs after one warm-up (`measure.timed`). Target: RTF time at N=1024
within 1.5x its time at N=64.
"""

from __future__ import annotations

import argparse

import torch

from measure import timed, use_device_and_threads
from ssmbench.core.rtf import rtf_kernel
from ssmbench.models.s4 import S4Mixer

H, L = 256, 4096


def rtf_run(N: int, device: str):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(H, N, generator=g)
    a = (0.5 * a / a.abs().sum(-1, keepdim=True)).to(device).requires_grad_()
    b = torch.randn(H, N, generator=g).to(device).requires_grad_()

    def run():
        rtf_kernel(a, b, L).sum().backward()
    return run


def s4_run(device: str):
    torch.manual_seed(0)
    layer = S4Mixer(H, d_state=64, mode="dplr", init="legs", l_max=L).to(device)

    def run():
        layer.ssm_kernel(L).sum().backward()
    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    args = parser.parse_args(argv)
    use_device_and_threads(args.device, args.threads)
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"kernel generation fwd+bwd, H={H}, L={L}, float32, {name}, torch {torch.__version__}, median of {args.repeat}")
    print(f"{'kernel':>14} {'N':>6} {'wall ms':>9} {'cpu ms':>9}")
    rows = [("rtf", 64, rtf_run(64, args.device)), ("rtf", 1024, rtf_run(1024, args.device)),
            ("s4 (dplr)", 64, s4_run(args.device))]
    walls = {}
    for label, N, run in rows:
        wall, cpu = timed(run, args.device, args.repeat)
        walls[(label, N)] = wall
        cpu_ms = f"{1e3 * cpu:>9.1f}" if args.device == "cpu" else f"{'-':>9}"
        print(f"{label:>14} {N:>6} {1e3 * wall:>9.1f} {cpu_ms}")
    ratio = walls[("rtf", 1024)] / walls[("rtf", 64)]
    print(f"rtf N=1024 / N=64 = {ratio:.2f} (target <= 1.5); rtf N=64 / s4 N=64 = "
          f"{walls[('rtf', 64)] / walls[('s4 (dplr)', 64)]:.2f}")


if __name__ == "__main__":
    main()
