"""Benchmark of ssmbench.core.linear_attention: forward + backward time and peak memory, recurrent vs chunkwise.

    .venv/bin/python benchmarks/linear_attention.py [--device cpu|cuda] [--quick] [--threads N] [--repeat R]
                                                    [--dtype float32|bfloat16]

B=4, H=4, Dk=Dv=64, L in {512, 2048} (--quick: 512, one timed repeat), q and k through the elu + 1 feature
map (q scaled by Dk^-1/2), a zero initial state. For each L:
    recurrent       linear_attention_recurrent (the loop; autograd through every step)
    chunkwise C     linear_attention_chunkwise with chunk_size C in {32, 64}
Columns as in benchmarks/delta_rule.py: median wall time of forward + backward (after one warm-up run),
the process CPU time of the same run (CPU only), the speed-up over the recurrent form, the peak memory
of one forward + backward (CUDA: the caching allocator's peak; CPU: growth of the peak resident set of a
fresh process running it once; Linux only, else nan), and the relative error max|o - o_rec| / max|o_rec|.
"""

from __future__ import annotations

from functools import partial

import torch

from measure import Method, method_table_args, run_method_table
from ssmbench.core.linear_attention import linear_attention_chunkwise, linear_attention_recurrent

B, H, D = 4, 4, 64
LENGTHS = [512, 2048]
CHUNKS = (32, 64)


def inputs(length: int, dtype: torch.dtype, device: str, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q = (torch.nn.functional.elu(torch.randn(B, H, length, D, generator=g)) + 1) * D**-0.5
    k = torch.nn.functional.elu(torch.randn(B, H, length, D, generator=g)) + 1
    v = torch.randn(B, H, length, D, generator=g)
    return [t.to(device=device, dtype=dtype) for t in (q, k, v)]


def methods() -> dict[str, Method]:
    table = {"recurrent": Method(linear_attention_recurrent, inputs, baseline=True)}
    for c in CHUNKS:
        table[f"chunkwise {c}"] = Method(partial(linear_attention_chunkwise, chunk_size=c), inputs)
    return table


def main() -> None:
    args = method_table_args(__doc__, LENGTHS, LENGTHS[:1], "input dtype (the state accumulates in float32 either way)")
    run_method_table(args, __file__, f"linear attention forward+backward, B={B}, H={H}, Dk=Dv={D}", methods(), "o")


if __name__ == "__main__":
    main()
