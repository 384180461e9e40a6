"""Benchmark of ssmbench.core.ssd (Mamba-2's SSD): forward + backward time and peak memory, recurrent vs chunkwise.

    .venv/bin/python benchmarks/ssd.py [--device cpu|cuda] [--quick] [--threads N] [--repeat R]
                                       [--dtype float32|bfloat16]

Bt=4, H=8, P=64, N=64, G=1 (B and C shared by all heads, Mamba-2's default), L in {2048, 8192}
(--quick: 512 and 2048, one timed repeat), dt log-uniform in [1e-3, 1e-1], A = -uniform(1, 16) per
head, a zero initial state. For each L:
    recurrent       ssd_recurrent (the loop over t; autograd through every step)
    chunkwise Q     ssd_chunkwise with chunk_size Q in {64, 128, 256} (autograd through the chunked form)
Columns: median wall time of forward + backward (after one warm-up run; the recurrent form at the
largest L is run once, without warm-up, to keep the benchmark short), the process CPU time of the
same run (CPU only: under contention from other processes it is the steadier figure), the speed-up
over the recurrent form, the peak memory of one forward + backward above what was allocated before
it (CUDA: the caching allocator's peak; CPU: growth of the peak resident set of a fresh process
running it once, with glibc malloc set to return large blocks at once; Linux only, else nan), and
the relative error max|y - y_rec| / max|y_rec| of the outputs against the recurrent form.
"""

from __future__ import annotations

import argparse
import math

import torch

from measure import cpu_peak_bytes_here, fwd_bwd_with_state, method_row, peak_bytes, timed, use_device_and_threads
from ssmbench.core.ssd import ssd_chunkwise, ssd_recurrent

BT, H, P, N, G = 4, 8, 64, 64, 1
CHUNKS = (64, 128, 256)


def inputs(length: int, dtype: torch.dtype, device: str, seed: int = 0) -> list[torch.Tensor]:
    """x (Bt, L, H, P), dt (Bt, L, H), A (H,), B, C (Bt, L, G, N)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(BT, length, H, P, generator=g)
    dt = torch.exp(torch.empty(BT, length, H).uniform_(math.log(1e-3), math.log(1e-1), generator=g))
    A = -torch.empty(H).uniform_(1.0, 16.0, generator=g)
    B = torch.randn(BT, length, G, N, generator=g)
    C = torch.randn(BT, length, G, N, generator=g)
    return [t.to(device=device, dtype=dtype) for t in (x, dt, A, B, C)]


def methods() -> dict:
    table = {"recurrent": ssd_recurrent}
    for c in CHUNKS:
        table[f"chunkwise {c}"] = lambda *t, c=c: ssd_chunkwise(*t, chunk_size=c)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="L in {512, 2048} only, one timed repeat")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="input dtype (SSD computes in float32 either way)")
    parser.add_argument("--peak-of", nargs=2, metavar=("L", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    use_device_and_threads(args.device, args.threads)
    dtype = getattr(torch, args.dtype)
    lengths = [512, 2048] if args.quick else [2048, 8192]
    repeat = 1 if args.quick else args.repeat
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    if args.peak_of:
        length, label = int(args.peak_of[0]), args.peak_of[1]
        fn, tensors = methods()[label], inputs(length, dtype, "cpu")
        print(cpu_peak_bytes_here(lambda: fwd_bwd_with_state(fn, tensors)))
        return
    peak_options = ["--dtype", args.dtype] + (["--threads", str(args.threads)] if args.threads else [])
    print(f"SSD forward+backward, Bt={BT}, H={H}, P={P}, N={N}, G={G}, {args.dtype}; {name}; torch {torch.__version__}")
    header = f"{'L':>6} {'method':>14} {'wall ms':>10} {'cpu ms':>10} {'speed-up':>9} {'peak MB':>9} {'err y':>9}"
    print(header)
    print("-" * len(header))
    for length in lengths:
        tensors = inputs(length, dtype, args.device)
        base_wall = reference = None
        for label, fn in methods().items():
            once_only = label == "recurrent" and length == max(lengths) and not args.quick
            last = {}
            wall, cpu = timed(lambda: last.update(y=fwd_bwd_with_state(fn, tensors)), args.device,
                              1 if once_only else repeat, warmup=not once_only)
            y = last.pop("y").float()
            if reference is None:
                base_wall, reference = wall, y
            peak = peak_bytes(lambda: fwd_bwd_with_state(fn, tensors), args.device, __file__,
                              [str(length), label, *peak_options])
            err = float((y - reference).abs().max() / reference.abs().max())
            print(method_row(length, label, 14, wall, cpu, base_wall, peak, err, args.device), flush=True)


if __name__ == "__main__":
    main()
