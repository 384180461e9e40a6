"""Time and peak memory of one forward + backward, shared by the benchmarks in this folder.

timed, cuda_peak_bytes and cpu_peak_bytes_here take `run`, a callable of no arguments that does one
forward + backward of the benchmark's own inputs and loss (its return value is ignored).

    synchronize(device)          waits for the work queued on a CUDA device (nothing to wait for on a CPU),
                                 so that a clock read after it includes that work.
    timed(run, device, repeat)   median wall seconds (time.perf_counter) and median process CPU seconds
                                 (time.process_time: all threads of this process, the steadier figure
                                 on a CPU shared with other processes) of `repeat` runs, after one
                                 warm-up run unless warmup=False; each run is bracketed by synchronize.
    cuda_peak_bytes(run)         the CUDA caching allocator's peak (torch.cuda.max_memory_allocated,
                                 reset before) during one run, above what was allocated before it.
    cpu_peak_bytes_here(run)     growth of this process's peak resident set during one run: glibc malloc
                                 is told (mallopt) to serve blocks of 64 KiB and more by mmap and to
                                 return them on free, the heap is trimmed (malloc_trim), the peak resident
                                 set (VmHWM) is reset to the current one by writing 5 to
                                 /proc/self/clear_refs, and the result is VmHWM after the run minus VmRSS
                                 before it (from /proc/self/status). NaN where this is not Linux with glibc.
                                 Earlier allocations of the process blur it, so it is meant for a fresh one:
    cpu_peak_bytes_in_fresh_process(script, args)
                                 runs `<this Python> script --peak-of *args` in a new process and returns the
                                 number on the last line it prints; the script's hidden --peak-of option
                                 builds its inputs and prints cpu_peak_bytes_here of the method named.

    peak_bytes(run, device, script, args)   cuda_peak_bytes(run) on a CUDA device, else
                                 cpu_peak_bytes_in_fresh_process(script, args).

Two helpers every script needs besides:

    use_device_and_threads(device, threads)  SystemExit if device is cuda and none is present; else
                                             torch.set_num_threads(threads) when threads is given.
    fwd_bwd_with_state(fn, tensors)          out, state = fn(*leaves) on fresh leaves of `tensors`,
                                             backward of sum(out) + sum(state); returns out (detached).

The recurrent-vs-chunkwise scripts (delta_rule.py, ssd.py, linear_attention.py) share their command line and
their table:

    method_table_args(doc, lengths, quick_lengths, dtype_help)
                                 --device, --quick, --threads, --repeat, --dtype, the hidden --peak-of L METHOD;
                                 sets device and threads; adds `lengths`, `repeat` (1 under --quick), `dtype`.
    run_method_table(args, script, title, methods, error_name, timed_once=None)
                                 `methods`: label -> Method(fn, inputs(length, dtype, device), baseline). For each
                                 length and method: the median wall / CPU time of forward + backward, the speed-up
                                 over the last baseline method above it, the peak memory (in a fresh process on a
                                 CPU) and max|out - out_base| / max|out_base|; with --peak-of, only that method's
                                 peak in this process. timed_once(label, length, args): time that one once, no warm-up.

The benchmarks are run as `python benchmarks/<name>.py`, which puts this folder on sys.path, so they
import this module as `measure`.
"""

from __future__ import annotations

import argparse
import ctypes
import re
import statistics
import subprocess
import sys
import time
from typing import Callable, NamedTuple

import torch

M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def synchronize(device: str | torch.device) -> None:
    """Wait for the work queued on `device` if it is a CUDA device."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[], object], device: str | torch.device, repeat: int,
          warmup: bool = True) -> tuple[float, float]:
    """Median (wall seconds, process CPU seconds) of `repeat` runs, after one warm-up run unless warmup=False."""
    def once() -> tuple[float, float]:
        synchronize(device)
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        synchronize(device)
        return time.perf_counter() - wall, time.process_time() - cpu

    if warmup:
        once()
    runs = [once() for _ in range(repeat)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def cuda_peak_bytes(run: Callable[[], object]) -> float:
    """The caching allocator's peak during one run, above what was allocated before it."""
    synchronize("cuda")
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    run()
    synchronize("cuda")
    return float(torch.cuda.max_memory_allocated() - base)


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{key}:\s+(\d+) kB", f.read()).group(1)) * 1024


def cpu_peak_bytes_here(run: Callable[[], object]) -> float:
    """Growth of this process's peak resident set during one run. Meant for a fresh process: glibc
    malloc is first told to serve blocks of 64 KiB and more by mmap and to return them on free, so the
    resident set follows the live tensors. NaN where this is not Linux with glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        if not libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024):
            return float("nan")
        libc.malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets the peak resident set size (VmHWM) to the current one
    except OSError:
        return float("nan")
    base = _status_bytes("VmRSS")
    run()
    return float(_status_bytes("VmHWM") - base)


def cpu_peak_bytes_in_fresh_process(script: str, args: list[str]) -> float:
    """The number printed last by `sys.executable script --peak-of *args`, run in a fresh process."""
    command = [sys.executable, script, "--peak-of", *args]
    proc = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(proc.stdout.strip().splitlines()[-1])


def peak_bytes(run: Callable[[], object], device: str, script: str, args: list[str]) -> float:
    """Peak memory of one run: the CUDA allocator's on a CUDA device, else that of a fresh process (`args`
    name the run to the script's --peak-of option)."""
    if torch.device(device).type == "cuda":
        return cuda_peak_bytes(run)
    return cpu_peak_bytes_in_fresh_process(script, args)


class Method(NamedTuple):
    fn: Callable
    inputs: Callable[[int, torch.dtype, str], list[torch.Tensor]]
    baseline: bool = False


def method_table_args(doc: str, lengths: list[int], quick_lengths: list[int], dtype_help: str) -> argparse.Namespace:
    """The scripts' shared command line (module docstring), parsed; device and threads set."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help=f"L in {quick_lengths} only, one timed repeat")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help=dtype_help)
    parser.add_argument("--peak-of", nargs=2, metavar=("L", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    use_device_and_threads(args.device, args.threads)
    args.lengths = quick_lengths if args.quick else lengths
    args.repeat = 1 if args.quick else args.repeat
    args.dtype = getattr(torch, args.dtype)
    return args


def run_method_table(args: argparse.Namespace, script: str, title: str, methods: dict[str, Method],
                     error_name: str, timed_once: Callable[[str, int, argparse.Namespace], bool] | None = None) -> None:
    """Print the table of the module docstring (or, with --peak-of, one peak) for `methods`."""
    if args.peak_of:
        length, label = int(args.peak_of[0]), args.peak_of[1]
        method = methods[label]
        tensors = method.inputs(length, args.dtype, "cpu")
        print(cpu_peak_bytes_here(lambda: fwd_bwd_with_state(method.fn, tensors)))
        return
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    dtype_name = str(args.dtype).removeprefix("torch.")
    peak_options = ["--dtype", dtype_name] + (["--threads", str(args.threads)] if args.threads else [])
    width = max(map(len, methods))
    print(f"{title}, {dtype_name}; {name}; torch {torch.__version__}")
    header = (f"{'L':>6} {'method':>{width}} {'wall ms':>10} {'cpu ms':>10} {'speed-up':>9} {'peak MB':>9} "
              f"{'err ' + error_name:>9}")
    print(header)
    print("-" * len(header))
    for length in args.lengths:
        base_wall = reference = None
        for label, method in methods.items():
            tensors = method.inputs(length, args.dtype, args.device)
            once = timed_once is not None and timed_once(label, length, args)
            last = {}
            wall, cpu = timed(lambda: last.update(out=fwd_bwd_with_state(method.fn, tensors)), args.device,
                              1 if once else args.repeat, warmup=not once)
            out = last.pop("out").float()
            if method.baseline:
                base_wall, reference = wall, out
            peak = peak_bytes(lambda: fwd_bwd_with_state(method.fn, tensors), args.device, script,
                              [str(length), label, *peak_options])
            err = float((out - reference).abs().max() / reference.abs().max())
            cpu_ms = f"{1e3 * cpu:>10.1f}" if torch.device(args.device).type == "cpu" else f"{'-':>10}"
            print(f"{length:>6} {label:>{width}} {1e3 * wall:>10.1f} {cpu_ms} {base_wall / wall:>8.1f}x "
                  f"{peak / 2**20:>9.1f} {err:>9.1e}", flush=True)


def use_device_and_threads(device: str, threads: int | None) -> None:
    """Stop with one line if `device` is cuda and no CUDA device is present; set the CPU thread count."""
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    if threads:
        torch.set_num_threads(threads)


def fwd_bwd_with_state(fn, tensors: list[torch.Tensor]) -> torch.Tensor:
    """out, state = fn(*leaves) on fresh leaves of `tensors`; backward of sum(out) + sum(state); returns out."""
    leaves = [t.detach().requires_grad_() for t in tensors]
    out, state = fn(*leaves)
    (out.float().sum() + state.sum()).backward()
    return out.detach()
