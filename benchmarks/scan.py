"""Benchmark of ssmbench.core.scan: forward + backward time and float32 accuracy.

    .venv/bin/python benchmarks/scan.py [--device cpu|cuda] [--quick] [--threads N] [--chunks 4,8,16,sqrt]
                                        [--scans linear,log]

For B=8, D=256, L in {1024, 4096, 16384}, float32 and complex64, |a| in [0.9, 0.9999] (random sign
or phase), time-varying a: (B, L, D). Times (median of --repeat runs, after one warm-up) of
forward + backward of Re<w, h> for
    loop      linear_scan_reference (the plain loop, autograd through every step)
    assoc     a Hillis-Steele associative scan (log2 L doubling steps, autograd through them),
              written here only as a point of comparison for the algorithm choice (on a CPU
              only up to L = 4096: its fresh full-size tensor per doubling step makes it minutes slow)
    scan      linear_scan (chunked scan, custom backward = adjoint scan)
"3 outputs ms" is what allocating and first touching three (B, L, D) tensors costs (h, dL/da,
dL/db: a floor that every method pays; on a VM with slow page faults it dominates the scan);
and the error of h (and of dL/da) against the float64 loop on the same inputs: max over channels of
max_t |h32 - h64| / max_t |h64|. `--chunks` also times linear_scan with other chunk lengths
(an integer, or sqrt for C ~ sqrt(L), the CPU default), to tune the per-device default.

The second table (--scans log) is log_linear_scan against log_linear_scan_reference (its loop), same
B, D and lengths, log a = log U[0.5, 1), log b ~ N(0, 1), forward + backward of <w, log h>: wall times,
the loop/scan ratio of wall and of process CPU time (the steadier one on a shared machine), and the
float32 error of log h (max |log h32 - log h64|, i.e. the relative error of h) for the scan, for the
loop run in float32, and for the one-shot form cumsum + logcumsumexp over the whole sequence, whose
cancellation log_linear_scan avoids; and the error of dL/dlog a against the float64 loop.
"""

from __future__ import annotations

import argparse
import math
from contextlib import contextmanager

import torch

import measure
from ssmbench.core import scan
from ssmbench.core.scan import linear_scan, linear_scan_reference, log_linear_scan, log_linear_scan_reference


ASSOC_CPU_MAX_LEN = 4096


def associative_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hillis-Steele inclusive scan of (a, b) pairs, (A2, B2) o (A1, B1) = (A2 A1, A2 B1 + B2); (B, L, D)."""
    length, k = b.shape[1], 1
    while k < length:
        b = torch.cat([b[:, :k], torch.addcmul(b[:, k:], a[:, k:], b[:, :-k])], dim=1)
        a = torch.cat([a[:, :k], a[:, k:] * a[:, :-k]], dim=1)
        k *= 2
    return b


@contextmanager
def chunk_length(choice: str):
    """Run linear_scan with C = choice (an integer, or "sqrt") instead of the per-device default."""
    default = scan._chunk_length
    scan._chunk_length = lambda length, device: max(8, math.isqrt(length)) if choice == "sqrt" else int(choice)
    try:
        yield
    finally:
        scan._chunk_length = default


def inputs(length: int, dtype: torch.dtype, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shape = (8, length, 256)
    mag = 0.9 + 0.0999 * torch.rand(shape, generator=g, dtype=torch.float64)
    if dtype.is_complex:
        a = torch.polar(mag, 2 * torch.pi * torch.rand(shape, generator=g, dtype=torch.float64))
        b = torch.randn(shape, generator=g, dtype=torch.complex128)
    else:
        a = mag * (torch.randint(0, 2, shape, generator=g) * 2 - 1)
        b = torch.randn(shape, generator=g, dtype=torch.float64)
    w = torch.randn(shape, generator=g, dtype=b.dtype)
    return [x.to(dtype).to(device) for x in (a, b, w)]


def fwd_bwd(fn, a, b, w):
    """h = fn(a, b) and dL/da for L = Re<w, h> (h.backward(w): the same gradient, no loss tensor)."""
    a, b = a.detach().requires_grad_(), b.detach().requires_grad_()
    h = fn(a, b)
    h.backward(w)
    return h.detach(), a.grad


def timed(fn, a, b, w, repeat: int) -> float:
    """Median wall seconds of fwd_bwd(fn, a, b, w) over `repeat` runs, after one warm-up run."""
    return measure.timed(lambda: fwd_bwd(fn, a, b, w), a.device, repeat)[0]


def one_shot_log_scan(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """log h = A + logcumsumexp(log b - A), A = cumsum(log a) over all of L (h_{-1} = 0): the unchunked form."""
    cum = log_a.cumsum(1)
    return cum + torch.logcumsumexp(log_b - cum, dim=1)


def log_inputs(length: int, device: str, seed: int = 0):
    """log a = log U[0.5, 1), log b ~ N(0, 1), w ~ N(0, 1): float32, (8, L, 256)."""
    g = torch.Generator().manual_seed(seed)
    shape = (8, length, 256)
    log_a = torch.log(0.5 + 0.5 * torch.rand(shape, generator=g, dtype=torch.float64))
    log_b = torch.randn(shape, generator=g, dtype=torch.float64)
    w = torch.randn(shape, generator=g, dtype=torch.float64)
    return [x.float().to(device) for x in (log_a, log_b, w)]


def log_table(lengths: list[int], device: str, repeat: int) -> None:
    """The log_linear_scan table (module docstring)."""
    print("log_linear_scan forward+backward, B=8, D=256, log a = log U[0.5, 1), log b ~ N(0, 1)")
    header = f"{'L':>6} {'loop ms':>9} {'scan ms':>9} {'loop/scan':>9} {'cpu ratio':>9} {'err scan':>9} " \
             f"{'err loop':>9} {'err 1-shot':>10} {'err da':>9}"
    print(header)
    print("-" * len(header))
    for length in lengths:
        log_a, log_b, w = log_inputs(length, device)
        loop = measure.timed(lambda: fwd_bwd(log_linear_scan_reference, log_a, log_b, w), log_a.device, repeat)
        fast = measure.timed(lambda: fwd_bwd(log_linear_scan, log_a, log_b, w), log_a.device, repeat)
        y_ref, da_ref = fwd_bwd(log_linear_scan_reference, log_a.double(), log_b.double(), w.double())
        y, da = fwd_bwd(log_linear_scan, log_a, log_b, w)
        with torch.no_grad():
            errs = [(x.double() - y_ref).abs().max().item() for x in
                    (y, log_linear_scan_reference(log_a, log_b), one_shot_log_scan(log_a, log_b))]
        print(f"{length:>6} {1e3 * loop[0]:>9.1f} {1e3 * fast[0]:>9.1f} {loop[0] / fast[0]:>9.1f} "
              f"{loop[1] / fast[1]:>9.1f} {errs[0]:>9.1e} {errs[1]:>9.1e} {errs[2]:>10.1e} {channel_err(da, da_ref):>9.1e}")


def output_floor(a: torch.Tensor, repeat: int) -> float:
    """Seconds to allocate and first touch three tensors like `a` (the outputs h, dL/da, dL/db)."""
    return measure.timed(lambda: [torch.empty_like(a).zero_() for _ in range(3)], a.device, repeat)[0]


def channel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x.to(ref.dtype) - ref).abs().amax(dim=1) / ref.abs().amax(dim=1)).max().item()


def linear_table(lengths: list[int], chunks: list[str], device: str, repeat: int) -> None:
    """The linear_scan table (module docstring)."""
    print("linear_scan forward+backward, B=8, D=256, time-varying a, |a| in [0.9, 0.9999]")
    header = f"{'dtype':>9} {'L':>6} {'loop ms':>9} {'assoc ms':>9} {'scan ms':>9} {'loop/scan':>9} {'assoc/scan':>10}" \
             f" {'3 outputs ms':>12} {'err h scan':>10} {'err h loop':>10} {'err da scan':>11}" + "".join(f" {'C=' + c + ' ms':>10}" for c in chunks)
    print(header)
    print("-" * len(header))
    for dtype in (torch.float32, torch.complex64):
        wide = torch.complex128 if dtype.is_complex else torch.float64
        for length in lengths:
            a, b, w = inputs(length, dtype, device)
            times = {name: timed(fn, a, b, w, repeat) for name, fn in
                     (("loop", linear_scan_reference), ("assoc", associative_scan), ("scan", linear_scan))
                     if name != "assoc" or device == "cuda" or length <= ASSOC_CPU_MAX_LEN}
            times.setdefault("assoc", math.nan)
            for c in chunks:
                with chunk_length(c):
                    times[c] = timed(linear_scan, a, b, w, repeat)
            h_ref, da_ref = fwd_bwd(linear_scan_reference, a.to(wide), b.to(wide), w.to(wide))
            h, da = fwd_bwd(linear_scan, a, b, w)
            with torch.no_grad():
                h_loop = linear_scan_reference(a, b)
            print(f"{str(dtype).removeprefix('torch.'):>9} {length:>6} {1e3 * times['loop']:>9.1f} "
                  f"{1e3 * times['assoc']:>9.1f} {1e3 * times['scan']:>9.1f} {times['loop'] / times['scan']:>9.1f} "
                  f"{times['assoc'] / times['scan']:>10.1f} {1e3 * output_floor(a, repeat):>12.1f} {channel_err(h, h_ref):>10.1e} "
                  f"{channel_err(h_loop, h_ref):>10.1e} {channel_err(da, da_ref):>11.1e}"
                  + "".join(f" {1e3 * times[c]:>10.1f}" for c in chunks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="L in {1024, 4096} only, one timed repeat")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chunks", default="", help="comma-separated chunk lengths to time as well, e.g. 4,8,16,sqrt")
    parser.add_argument("--scans", default="linear,log", help="which tables: linear (linear_scan), log (log_linear_scan)")
    args = parser.parse_args()
    scans = set(args.scans.split(","))
    if not scans <= {"linear", "log"}:
        raise SystemExit(f"--scans {args.scans}: give linear, log or linear,log")
    chunks = [c for c in args.chunks.split(",") if c]
    measure.use_device_and_threads(args.device, args.threads)
    lengths = [1024, 4096] if args.quick else [1024, 4096, 16384]
    repeat = 1 if args.quick else args.repeat
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"{name}; torch {torch.__version__}")
    if "linear" in scans:
        linear_table(lengths, chunks, args.device, repeat)
    if "log" in scans:
        log_table(lengths, args.device, repeat)


if __name__ == "__main__":
    main()
