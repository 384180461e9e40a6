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

import math
from functools import partial

import torch

from measure import Method, method_table_args, run_method_table
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


def methods() -> dict[str, Method]:
    table = {"recurrent": Method(ssd_recurrent, inputs, baseline=True)}
    for c in CHUNKS:
        table[f"chunkwise {c}"] = Method(partial(ssd_chunkwise, chunk_size=c), inputs)
    return table


def recurrent_at_the_longest(label: str, length: int, args) -> bool:
    """The recurrent form at the longest length (tens of seconds a run) is timed once, without warm-up."""
    return label == "recurrent" and length == max(args.lengths) and not args.quick


def main() -> None:
    args = method_table_args(__doc__, [2048, 8192], [512, 2048], "input dtype (SSD computes in float32 either way)")
    run_method_table(args, __file__, f"SSD forward+backward, Bt={BT}, H={H}, P={P}, N={N}, G={G}", methods(), "y",
                     timed_once=recurrent_at_the_longest)


if __name__ == "__main__":
    main()
