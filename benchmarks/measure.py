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
    method_row(length, label, width, wall, cpu, base_wall, peak, err, device)
                                             one row of the L / method / wall / cpu / speed-up / peak / error
                                             table the recurrent-vs-chunkwise scripts print.

The benchmarks are run as `python benchmarks/<name>.py`, which puts this folder on sys.path, so they
import this module as `measure`.
"""

from __future__ import annotations

import ctypes
import re
import statistics
import subprocess
import sys
import time
from typing import Callable

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


def method_row(length: int, label: str, width: int, wall: float, cpu: float, base_wall: float, peak: float,
               err: float, device: str) -> str:
    """`length label wall-ms cpu-ms speed-up peak-MB error`, the label right-aligned in `width` characters
    (cpu ms is "-" off the CPU, where process time does not count the device's work)."""
    cpu_ms = f"{1e3 * cpu:>10.1f}" if torch.device(device).type == "cpu" else f"{'-':>10}"
    return (f"{length:>6} {label:>{width}} {1e3 * wall:>10.1f} {cpu_ms} {base_wall / wall:>8.1f}x "
            f"{peak / 2**20:>9.1f} {err:>9.1e}")


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
