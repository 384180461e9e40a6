"""S4 kernel generation: reference vs memory-bounded (chunked) Cauchy backend, and kernel vs FFT convolution.

    .venv/bin/python benchmarks/s4_kernel.py [--device cpu|cuda] [--quick] [--threads T]

Part 1: `kernel_dplr` (conjugate-symmetric, as the S4 layer calls it) for H=256 channels, N=64 states
(32 conjugate pairs), HiPPO-LegS, L in {1024, 4096, 16384} ({1024, 4096} with --quick): forward and
backward time (median of --repeats after one warm-up) and peak memory of one forward+backward, per
Cauchy backend. Peak memory is what the pass allocates on top of what was allocated before it:
on CUDA torch.cuda.max_memory_allocated; on CPU the running sum of the allocations and frees that
torch.profiler records (profile_memory=True), in a separate untimed pass.
Targets at the longest L: chunked peak < 1/4 of reference, chunked time <= 1.5x reference.

Part 2: one S4 layer (mode dplr, d_model 256, d_state 64) at B=8, L=4096: forward+backward of the
kernel generation alone and of the FFT convolution alone (u: (8, 256, 4096), K: (256, 4096)), and of
the whole layer. Target: kernel generation time <= FFT convolution time.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from measure import cuda_peak_bytes, synchronize  # noqa: E402
from ssmbench.core.cauchy import set_cauchy_backend  # noqa: E402
from ssmbench.core.fftconv import causal_conv  # noqa: E402
from ssmbench.core.hippo import dplr  # noqa: E402
from ssmbench.core.ssm_kernel import kernel_dplr  # noqa: E402
from ssmbench.models.s4 import S4Mixer  # noqa: E402

H, N = 256, 64


def kernel_inputs(device: torch.device) -> list[torch.Tensor]:
    """Lambda, P, B (H, ...) from DPLR-LegS, random C~ (1, H, N/2), dt log-uniform in [1e-3, 1e-1]."""
    g = torch.Generator().manual_seed(0)
    Lambda, P, B, _ = dplr("legs", N)
    C = torch.randn(1, H, N // 2, generator=g, dtype=torch.complex64)
    dt = torch.exp(torch.rand(H, generator=g) * math.log(100.0) + math.log(1e-3))
    tensors = [Lambda.expand(H, -1), P.expand(H, -1, -1), B.expand(H, -1), C]
    tensors = [t.to(torch.complex64).clone() for t in tensors] + [dt]
    return [t.to(device).requires_grad_() for t in tensors]


def kernel_pass(inputs: list[torch.Tensor], L: int) -> tuple[torch.Tensor, torch.Tensor]:
    Lambda, P, B, C, dt = inputs
    K = kernel_dplr(Lambda, P, P, B, C, dt, L, conj_sym=True)
    return K, torch.ones_like(K)


def time_fwd_bwd(make, device: torch.device, repeats: int) -> tuple[float, float]:
    """Median forward and backward seconds of `make()` -> (output, grad_output)."""
    fwd, bwd = [], []
    for i in range(repeats + 1):
        synchronize(device)
        t0 = time.perf_counter()
        out, grad = make()
        synchronize(device)
        t1 = time.perf_counter()
        out.backward(grad)
        synchronize(device)
        t2 = time.perf_counter()
        if i:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
    return statistics.median(fwd), statistics.median(bwd)


def peak_bytes(make, device: torch.device) -> int | None:
    """Bytes allocated at the peak of one forward+backward, above what was allocated before it."""
    def run() -> None:
        out, grad = make()
        out.backward(grad)

    if device.type == "cuda":
        return int(cuda_peak_bytes(run))
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    try:  # the profiler's raw allocation records (not a stable torch API)
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    except AttributeError:
        return None
    events.sort(key=lambda e: e.start_ns())
    current = peak = 0
    for e in events:
        current += e.nbytes()
        peak = max(peak, current)
    return peak


def clear_grads(inputs: list[torch.Tensor]) -> None:
    for t in inputs:
        t.grad = None


def available_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def reference_estimate(L: int) -> int:
    """About what the reference backward holds: the Cauchy matrix (H, L+2, N/2) complex64 and its
    broadcast gradient (4 numerators), plus temporaries."""
    return 8 * H * (L + 2) * (N // 2) * 7


def benchmark_backends(lengths, device, repeats, max_elements) -> list[dict]:
    rows = []
    for L in lengths:
        for backend in ("reference", "chunked"):
            set_cauchy_backend(backend, max_elements=max_elements)
            inputs = kernel_inputs(device)
            if backend == "reference" and device.type == "cpu":
                avail = available_bytes()
                if avail is not None and reference_estimate(L) > 0.8 * avail:
                    needs = f"needs ~{reference_estimate(L) / 2**30:.1f} GiB"
                    rows.append({"L": L, "backend": backend, "skipped": needs})
                    continue
            make = lambda: kernel_pass(inputs, L)  # noqa: E731
            fwd, bwd = time_fwd_bwd(make, device, repeats)
            clear_grads(inputs)
            peak = peak_bytes(make, device)
            rows.append({"L": L, "backend": backend, "fwd": fwd, "bwd": bwd, "peak": peak})
    return rows


def print_backend_table(rows: list[dict]) -> None:
    print(f"{'L':>6} {'backend':>9} {'fwd ms':>9} {'bwd ms':>9} {'total ms':>9} {'peak MiB':>9}"
          f" {'time/ref':>10} {'mem/ref':>9}")
    reference = {r["L"]: r for r in rows if r["backend"] == "reference" and "skipped" not in r}
    for r in rows:
        if "skipped" in r:
            print(f"{r['L']:>6} {r['backend']:>9}  skipped: {r['skipped']} (more than this machine has free)")
            continue
        total = r["fwd"] + r["bwd"]
        ref = reference.get(r["L"])
        t_ratio = f"{total / (ref['fwd'] + ref['bwd']):.2f}" if ref else "-"
        m_ratio = f"{r['peak'] / ref['peak']:.3f}" if ref and ref["peak"] and r["peak"] is not None else "-"
        peak = f"{r['peak'] / 2**20:.1f}" if r["peak"] is not None else "n/a"
        print(f"{r['L']:>6} {r['backend']:>9} {1e3 * r['fwd']:>9.1f} {1e3 * r['bwd']:>9.1f} {1e3 * total:>9.1f}"
              f" {peak:>9} {t_ratio:>10} {m_ratio:>9}")


def benchmark_layer(device, repeats, batch=8, L=4096) -> None:
    set_cauchy_backend("chunked")
    torch.manual_seed(0)
    layer = S4Mixer(H, d_state=N, mode="dplr", init="legs", l_max=L).to(device)
    x = torch.randn(batch, L, H, device=device)
    u = torch.randn(batch, H, L, device=device, requires_grad=True)
    K = torch.randn(H, L, device=device, requires_grad=True)

    def kernel():
        out = layer.ssm_kernel(L)
        return out, torch.ones_like(out)

    def conv():
        out = causal_conv(u, K)
        return out, torch.ones_like(out)

    def whole():
        out = layer(x)
        return out, torch.ones_like(out)

    results = {name: time_fwd_bwd(fn, device, repeats) for name, fn in
               (("kernel generation", kernel), ("FFT convolution", conv), ("whole S4 layer", whole))}
    print(f"\nS4 layer forward+backward, B={batch}, H={H}, N={N}, L={L} (Cauchy backend chunked, the default)")
    print(f"{'part':>18} {'fwd ms':>9} {'bwd ms':>9} {'total ms':>9}")
    for name, (fwd, bwd) in results.items():
        print(f"{name:>18} {1e3 * fwd:>9.1f} {1e3 * bwd:>9.1f} {1e3 * (fwd + bwd):>9.1f}")
    k, c = (sum(results[n]) for n in ("kernel generation", "FFT convolution"))
    print(f"kernel generation / FFT convolution = {k / c:.2f} (target <= 1)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="L in {1024, 4096} only, 2 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats after one warm-up (default 5, quick 2)")
    parser.add_argument("--max-elements", type=int, default=2**22,
                        help="chunked backend: Cauchy-matrix entries held at once (default 2^22)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--skip-layer", action="store_true", help="only the backend comparison")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    repeats = args.repeats or (2 if args.quick else 5)
    lengths = (1024, 4096) if args.quick else (1024, 4096, 16384)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"S4 kernel generation (kernel_dplr, conj_sym), H={H}, N={N} ({N // 2} pairs), complex64, {name}, "
          f"torch {torch.__version__}, median of {repeats}, chunk budget {args.max_elements} entries")
    print_backend_table(benchmark_backends(lengths, device, repeats, args.max_elements))
    if not args.skip_layer:
        benchmark_layer(device, repeats)


if __name__ == "__main__":
    main()
