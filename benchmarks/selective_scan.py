"""Benchmark of ssmbench.core.selective_scan: forward + backward time and peak memory, loop vs chunked.

    .venv/bin/python benchmarks/selective_scan.py [--device cpu|cuda] [--quick] [--threads N] [--repeat R]
                                                  [--reference-repeat R] [--skip-reference-above L]
                                                  [--chunk T]

Bt=8, Dm=512, N=16, L in {1024, 4096} (--quick: 256 and 1024, one timed repeat), float32, Mamba's
initialization: A = -(1 .. N) for every channel (S4D-real), delta = softplus(b + 0.5 noise) with
softplus(b) log-uniform in [1e-3, 1e-1] per channel, D = 1, the gate z given, no initial state; the
loss is sum(y) + sum(h_L) and every input is a leaf that requires grad. For each L:
    reference   selective_scan_reference (the loop over t; autograd through every step)
    chunked     selective_scan (chunks of T steps, T = ~sqrt(L / 3) by default or --chunk; custom backward
                that keeps only the inputs and the chunk start states and recomputes each chunk)
Columns: median wall time of forward + backward (after one warm-up run; the reference, which takes
seconds per run at L = 4096, is timed --reference-repeat times), the process CPU time of the same run
(CPU only: under contention from other processes it is the steadier figure), the speed-up over the
reference (wall and CPU), the peak memory of one forward + backward above what was allocated before it
(CUDA: the caching allocator's peak; CPU: growth of the peak resident set of a fresh process running it
once, with glibc malloc set to return large blocks at once; Linux only, else nan), and the relative
errors max|x - x_ref| / max|x_ref| of y and of the worst input gradient against the reference.
Each L's header line gives two sizes to read the peak against: "outputs", what any method must hold at
the end (y and the gradients of u, delta, z, B, C, A, D), and one (Bt, L, Dm, N) float32 tensor, which
the chunked path never allocates.
"""

from __future__ import annotations

import argparse
import math

import torch

from measure import cpu_peak_bytes_here, cpu_peak_bytes_in_fresh_process, cuda_peak_bytes, timed, use_device_and_threads
from ssmbench.core import selective_scan as ss
from ssmbench.core.selective_scan import selective_scan, selective_scan_reference

BT, DM, N = 8, 512, 16
NAMES = ("u", "delta", "A", "B", "C", "D", "z")


def inputs(length: int, device: str, seed: int = 0) -> list[torch.Tensor]:
    """u, delta, A, B, C, D, z as in a Mamba block at initialization (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    dt0 = torch.exp(math.log(1e-3) + (math.log(1e-1) - math.log(1e-3)) * torch.rand(DM, generator=g))
    bias = dt0 + torch.log(-torch.expm1(-dt0))  # softplus(bias) = dt0
    delta = torch.nn.functional.softplus(bias + 0.5 * torch.randn(BT, length, DM, generator=g))
    u = torch.randn(BT, length, DM, generator=g)
    A = -torch.arange(1, N + 1, dtype=torch.float32).repeat(DM, 1)
    B = torch.randn(BT, length, N, generator=g)
    C = torch.randn(BT, length, N, generator=g)
    D = torch.ones(DM)
    z = torch.randn(BT, length, DM, generator=g)
    return [t.to(device) for t in (u, delta, A, B, C, D, z)]


def fwd_bwd(fn, tensors: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """y, h = fn(u, delta, A, B, C, D, z, return_state=True); backward of sum(y) + sum(h) into fresh
    leaves; returns y and the leaves' gradients."""
    leaves = [t.detach().requires_grad_() for t in tensors]
    y, h = fn(*leaves, return_state=True)
    (y.sum() + h.sum()).backward()
    return y.detach(), [t.grad for t in leaves]


def methods(chunk: int | None) -> dict:
    return {
        "reference": selective_scan_reference,
        "chunked": lambda *t, **kw: selective_scan(*t, **kw, chunk_size=chunk),
    }


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.double() - ref.double()).abs().max() / ref.double().abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="L in {256, 1024} only, one timed repeat")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of the chunked path")
    parser.add_argument("--reference-repeat", type=int, default=1, help="timed runs of the reference loop")
    parser.add_argument("--skip-reference-above", type=int, default=None, metavar="L",
                        help="do not run the reference for longer sequences (no speed-up or errors then)")
    parser.add_argument("--chunk", type=int, default=None, help="steps per chunk (default: ~sqrt(L / 3))")
    parser.add_argument("--peak-of", nargs=2, metavar=("L", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    use_device_and_threads(args.device, args.threads)
    table = methods(args.chunk)
    if args.peak_of:
        length, label = int(args.peak_of[0]), args.peak_of[1]
        fn, tensors = table[label], inputs(length, "cpu")
        print(cpu_peak_bytes_here(lambda: fwd_bwd(fn, tensors)))
        return
    lengths = [256, 1024] if args.quick else [1024, 4096]
    repeat = 1 if args.quick else args.repeat
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    peak_options = ["--threads", str(args.threads)] if args.threads else []
    if args.chunk:
        peak_options += ["--chunk", str(args.chunk)]
    print(f"selective scan forward+backward, Bt={BT}, Dm={DM}, N={N}, float32, D and z given; {name}; "
          f"torch {torch.__version__}")
    header = (f"{'L':>6} {'method':>10} {'T':>4} {'wall ms':>10} {'cpu ms':>10} {'speed-up':>9} {'cpu x':>7} "
              f"{'peak MB':>9} {'err y':>9} {'err grad':>9}")
    print(header)
    print("-" * len(header))
    for length in lengths:
        tensors = inputs(length, args.device)
        outputs = sum(t.numel() * t.element_size() for t in tensors) + BT * length * DM * 4  # y + grads
        print(f"L={length}: outputs {outputs / 2**20:.0f} MB, one (Bt, L, Dm, N) float32 tensor "
              f"{BT * length * DM * N * 4 / 2**20:.0f} MB", flush=True)
        base = reference = None
        for label, fn in table.items():
            if label == "reference" and args.skip_reference_above is not None and length > args.skip_reference_above:
                print(f"{length:>6} {label:>10} {'':>4} {'skipped (--skip-reference-above)':>32}", flush=True)
                continue
            wall, cpu = timed(lambda: fwd_bwd(fn, tensors), args.device,
                              args.reference_repeat if label == "reference" else repeat)
            y, grads = fwd_bwd(fn, tensors)
            if args.device == "cuda":
                peak = cuda_peak_bytes(lambda: fwd_bwd(fn, tensors))
            else:
                peak = cpu_peak_bytes_in_fresh_process(__file__, [str(length), label, *peak_options])
            if label == "reference":
                base, reference = (wall, cpu), (y, grads)
                chunk, speed, err_y, err_g = "-", f"{'1.0x':>9} {'1.0x':>7}", f"{'-':>9}", f"{'-':>9}"
            elif reference is None:  # the reference was skipped at this length
                chunk = args.chunk or ss._chunk_length(BT, length, DM, N, 4)
                speed, err_y, err_g = f"{'-':>9} {'-':>7}", f"{'-':>9}", f"{'-':>9}"
            else:
                chunk = args.chunk or ss._chunk_length(BT, length, DM, N, 4)
                speed = f"{base[0] / wall:>8.1f}x {base[1] / cpu:>6.1f}x"
                err_y = f"{rel_err(y, reference[0]):>9.1e}"
                err_g = f"{max(rel_err(g, r) for g, r in zip(grads, reference[1])):>9.1e}"
            cpu_ms = f"{1e3 * cpu:>10.1f}" if args.device == "cpu" else f"{'-':>10}"
            print(f"{length:>6} {label:>10} {chunk:>4} {1e3 * wall:>10.1f} {cpu_ms} {speed} "
                  f"{peak / 2**20:>9.1f} {err_y} {err_g}", flush=True)
            del y, grads


if __name__ == "__main__":
    main()
