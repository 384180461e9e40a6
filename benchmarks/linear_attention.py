"""Benchmark of ssmbench.core.linear_attention: forward + backward time and peak memory, recurrent vs chunkwise.

    .venv/bin/python benchmarks/linear_attention.py [--device cpu|cuda] [--threads N] [--repeat R]
                                                    [--dtype float32|bfloat16]

B=4, H=4, Dk=Dv=64, L in {512, 2048}, q and k through the elu + 1 feature map (q scaled by Dk^-1/2),
a zero initial state. For each L:
    recurrent       linear_attention_recurrent (the loop; autograd through every step)
    chunkwise C     linear_attention_chunkwise with chunk_size C in {32, 64}
Columns as in benchmarks/delta_rule.py: median wall time of forward + backward (after one warm-up run),
the process CPU time of the same run (CPU only), the speed-up over the recurrent form, the peak memory
of one forward + backward (CUDA: the caching allocator's peak; CPU: growth of the peak resident set of a
fresh process running it once; Linux only, else nan), and the relative error max|o - o_rec| / max|o_rec|.
"""

from __future__ import annotations

import argparse

import torch

from measure import cpu_peak_bytes_here, fwd_bwd_with_state, method_row, peak_bytes, timed, use_device_and_threads
from ssmbench.core.linear_attention import linear_attention_chunkwise, linear_attention_recurrent

B, H, D = 4, 4, 64
LENGTHS = (512, 2048)
CHUNKS = (32, 64)


def inputs(length: int, dtype: torch.dtype, device: str, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q = (torch.nn.functional.elu(torch.randn(B, H, length, D, generator=g)) + 1) * D**-0.5
    k = torch.nn.functional.elu(torch.randn(B, H, length, D, generator=g)) + 1
    v = torch.randn(B, H, length, D, generator=g)
    return [t.to(device=device, dtype=dtype) for t in (q, k, v)]


def methods() -> dict:
    table = {"recurrent": linear_attention_recurrent}
    for c in CHUNKS:
        table[f"chunkwise {c}"] = lambda *t, c=c: linear_attention_chunkwise(*t, chunk_size=c)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="input dtype (the state accumulates in float32 either way)")
    parser.add_argument("--peak-of", nargs=2, metavar=("L", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    use_device_and_threads(args.device, args.threads)
    dtype = getattr(torch, args.dtype)
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    if args.peak_of:
        length, label = int(args.peak_of[0]), args.peak_of[1]
        fn, tensors = methods()[label], inputs(length, dtype, "cpu")
        print(cpu_peak_bytes_here(lambda: fwd_bwd_with_state(fn, tensors)))
        return
    peak_options = ["--dtype", args.dtype] + (["--threads", str(args.threads)] if args.threads else [])
    print(f"linear attention forward+backward, B={B}, H={H}, Dk=Dv={D}, {args.dtype}; {name}; "
          f"torch {torch.__version__}")
    header = f"{'L':>6} {'method':>14} {'wall ms':>10} {'cpu ms':>10} {'speed-up':>9} {'peak MB':>9} {'err o':>9}"
    print(header)
    print("-" * len(header))
    for length in LENGTHS:
        tensors = inputs(length, dtype, args.device)
        base_wall = reference = None
        for label, fn in methods().items():
            wall, cpu = timed(lambda: fwd_bwd_with_state(fn, tensors), args.device, args.repeat)
            o = fwd_bwd_with_state(fn, tensors).float()
            if reference is None:
                base_wall, reference = wall, o
            peak = peak_bytes(lambda: fwd_bwd_with_state(fn, tensors), args.device, __file__,
                              [str(length), label, *peak_options])
            err = float((o - reference).abs().max() / reference.abs().max())
            print(method_row(length, label, 14, wall, cpu, base_wall, peak, err, args.device), flush=True)


if __name__ == "__main__":
    main()
