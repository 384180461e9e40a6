"""Benchmark of ssmbench.core.delta_rule: forward + backward time and peak memory, recurrent vs chunkwise,
for the delta rule and the gated delta rule.

    .venv/bin/python benchmarks/delta_rule.py [--device cpu|cuda] [--quick] [--threads N] [--repeat R]
                                              [--dtype float32|bfloat16]

B=4, H=4, Dk=Dv=64, L in {512, 2048, 8192} (--quick: 512 and 2048, one timed repeat), unit-norm keys,
beta in (0, 1), log decays g = logsigmoid(2 + N(0, 1)) (alpha around 0.88, as low as 0.1 now and then),
a zero initial state. For each L:
    recurrent             delta_rule_reference (the loop; autograd through every step)
    chunkwise C           delta_rule_chunkwise with chunk_size C in {32, 64} (autograd through the WY/UT form)
    gated recurrent       gated_delta_rule_recurrent (the loop)
    gated chunkwise C     gated_delta_rule_chunkwise with chunk_size C in {32, 64}
    fla naive chunk 64    flash-linear-attention's pure-PyTorch chunk form, naive_chunk_gated_delta_rule
                          (fla/ops/gated_delta_rule/naive.py, loaded from the installed package's file so
                          that its Triton-backed __init__ is not needed; needs einops), on the same inputs in
                          its (B, L, H, D) layout with scale 1; only when `fla` is installed
Columns: median wall time of forward + backward (after one warm-up run), the process CPU time of the
same run (CPU only: under contention from other processes it is the steadier figure), the speed-up over
the recurrent form of the same rule, the peak memory of one forward + backward above what was allocated
before it (CUDA: the caching allocator's peak; CPU: growth of the peak resident set of a fresh process
running it once, with glibc malloc set to return large blocks at once; Linux only, else nan), and
the relative error max|o - o_rec| / max|o_rec| of the outputs against the recurrent form of the same rule.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import torch

from measure import cpu_peak_bytes_here, fwd_bwd_with_state, method_row, peak_bytes, timed, use_device_and_threads
from ssmbench.core.delta_rule import (delta_rule_chunkwise, delta_rule_reference, gated_delta_rule_chunkwise,
                                      gated_delta_rule_recurrent)

B, H, D = 4, 4, 64
CHUNKS = (32, 64)


def inputs(length: int, dtype: torch.dtype, device: str, gated: bool, seed: int = 0) -> list[torch.Tensor]:
    """q, k, v, beta (and g when gated) for one length."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, length, D, generator=g) * D**-0.5
    k = torch.nn.functional.normalize(torch.randn(B, H, length, D, generator=g), dim=-1)
    v = torch.randn(B, H, length, D, generator=g)
    beta = torch.sigmoid(torch.randn(B, H, length, generator=g))
    log_decay = torch.nn.functional.logsigmoid(2 + torch.randn(B, H, length, generator=g))
    return [t.to(device=device, dtype=dtype) for t in (q, k, v, beta, log_decay)[:5 if gated else 4]]


def fla_naive_chunk():
    """flash-linear-attention's naive_chunk_gated_delta_rule wrapped to this file's layouts and signature
    (q, k, v, beta, g) -> (o, S), or None when fla (or einops) is not installed."""
    spec = importlib.util.find_spec("fla")
    if spec is None or spec.origin is None or importlib.util.find_spec("einops") is None:
        return None
    path = Path(spec.origin).parent / "ops" / "gated_delta_rule" / "naive.py"
    module_spec = importlib.util.spec_from_file_location("fla_gated_delta_rule_naive", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)

    def run(q, k, v, beta, g):
        o, S = module.naive_chunk_gated_delta_rule(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                   g.transpose(1, 2), beta.transpose(1, 2), chunk_size=64,
                                                   scale=1.0, output_final_state=True)
        return o.transpose(1, 2), S
    return run


def methods() -> dict:
    """label -> (function, gated); the first method of each rule (gated or not) is its recurrent form."""
    table = {"recurrent": (delta_rule_reference, False)}
    for c in CHUNKS:
        table[f"chunkwise {c}"] = (lambda *t, c=c: delta_rule_chunkwise(*t, chunk_size=c), False)
    table["gated recurrent"] = (gated_delta_rule_recurrent, True)
    for c in CHUNKS:
        table[f"gated chunkwise {c}"] = (lambda *t, c=c: gated_delta_rule_chunkwise(*t, chunk_size=c), True)
    fla = fla_naive_chunk()
    if fla is not None:
        table["fla naive chunk 64"] = (fla, True)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="L in {512, 2048} only, one timed repeat")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="input dtype (the rule accumulates in float32 either way)")
    parser.add_argument("--peak-of", nargs=2, metavar=("L", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    use_device_and_threads(args.device, args.threads)
    dtype = getattr(torch, args.dtype)
    lengths = [512, 2048] if args.quick else [512, 2048, 8192]
    repeat = 1 if args.quick else args.repeat
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    if args.peak_of:
        length, label = int(args.peak_of[0]), args.peak_of[1]
        fn, gated = methods()[label]
        tensors = inputs(length, dtype, "cpu", gated)
        print(cpu_peak_bytes_here(lambda: fwd_bwd_with_state(fn, tensors)))
        return
    peak_options = ["--dtype", args.dtype] + (["--threads", str(args.threads)] if args.threads else [])
    print(f"delta rule and gated delta rule forward+backward, B={B}, H={H}, Dk=Dv={D}, {args.dtype}; {name}; "
          f"torch {torch.__version__}")
    header = f"{'L':>6} {'method':>18} {'wall ms':>10} {'cpu ms':>10} {'speed-up':>9} {'peak MB':>9} {'err o':>9}"
    print(header)
    print("-" * len(header))
    for length in lengths:
        base_wall = reference = None
        for label, (fn, gated) in methods().items():
            tensors = inputs(length, dtype, args.device, gated)
            wall, cpu = timed(lambda: fwd_bwd_with_state(fn, tensors), args.device, repeat)
            o = fwd_bwd_with_state(fn, tensors).float()
            if "recurrent" in label:
                base_wall, reference = wall, o
            peak = peak_bytes(lambda: fwd_bwd_with_state(fn, tensors), args.device, __file__,
                              [str(length), label, *peak_options])
            err = float((o - reference).abs().max() / reference.abs().max())
            print(method_row(length, label, 18, wall, cpu, base_wall, peak, err, args.device), flush=True)


if __name__ == "__main__":
    main()
