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

import importlib.util
from functools import partial
from pathlib import Path

import torch

from measure import Method, method_table_args, run_method_table
from ssmbench.core.delta_rule import (delta_rule_chunkwise, delta_rule_reference, gated_delta_rule_chunkwise,
                                      gated_delta_rule_recurrent)

B, H, D = 4, 4, 64
CHUNKS = (32, 64)


def inputs(length: int, dtype: torch.dtype, device: str, *, gated: bool, seed: int = 0) -> list[torch.Tensor]:
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


def methods() -> dict[str, Method]:
    """label -> Method; the recurrent form of each rule (gated or not) is the baseline of the rows below it."""
    plain, gated = partial(inputs, gated=False), partial(inputs, gated=True)
    table = {"recurrent": Method(delta_rule_reference, plain, baseline=True)}
    for c in CHUNKS:
        table[f"chunkwise {c}"] = Method(partial(delta_rule_chunkwise, chunk_size=c), plain)
    table["gated recurrent"] = Method(gated_delta_rule_recurrent, gated, baseline=True)
    for c in CHUNKS:
        table[f"gated chunkwise {c}"] = Method(partial(gated_delta_rule_chunkwise, chunk_size=c), gated)
    fla = fla_naive_chunk()
    if fla is not None:
        table["fla naive chunk 64"] = Method(fla, gated)
    return table


def main() -> None:
    args = method_table_args(__doc__, [512, 2048, 8192], [512, 2048],
                             "input dtype (the rule accumulates in float32 either way)")
    run_method_table(args, __file__, f"delta rule and gated delta rule forward+backward, B={B}, H={H}, Dk=Dv={D}",
                     methods(), "o")


if __name__ == "__main__":
    main()
