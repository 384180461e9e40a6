"""Optional fused GPU kernels (Triton) that `ssmbench.core` dispatches to; the same functions as core's torch paths.

    mode()                       SSMBENCH_KERNELS: auto (default) | torch | triton
    parse_choice(value)          the config key `kernels` (auto | torch | triton | None), checked
    choose(value)                applies it: sets SSMBENCH_KERNELS (None: leaves it)
    triton_available()           triton is installed (found without importing it)
    interpreting()               TRITON_INTERPRET=1: CPU tensors may run through Triton's interpreter
    use_kernel(name, tensors)    the dispatch rule below: True if core should call the kernel `name`
    used()                       the kernels use_kernel has sent work to in this process (results.json records it)
    launch(built, name, device, grid, *args, **kwargs)   how every kernel module launches its kernels
    tile(kernel, blocks, device, **given)                the tile sizes it launches with (checked)

Every kernel is once differentiable: its backward is a kernel, not itself differentiated (a second derivative,
create_graph=True through it, raises; SSMBENCH_KERNELS=torch where one is needed: the torch paths of the delta rule
and the scans' loops support it).
    KERNEL_DTYPES                the dtypes each kernel takes, by name

Nothing here imports triton: the kernel modules (ssmbench.kernels.linear_scan, ...) are imported by core
only after use_kernel said yes, so ssmbench works, and core imports fast, without triton installed.

The dispatch rule. A kernel applies to tensors that are all on one device and of a dtype it takes, where
the device is CUDA, or the CPU while TRITON_INTERPRET=1 (Triton's interpreter runs the same kernel on
CPU tensors with numpy: slow, for testing the kernels where there is no GPU; every kernel picks the
interpreter for CPU tensors and compiles for CUDA tensors, so both work in one process whatever the
variable said when triton was imported). Then
    SSMBENCH_KERNELS=torch    always the torch path;
    SSMBENCH_KERNELS=auto     the kernel where triton is installed and the kernel applies (on CUDA only the
                              kernels of VERIFIED_ON_GPU), else the torch path (the same function): a normal
                              CPU run (TRITON_INTERPRET unset) always takes the torch path;
    SSMBENCH_KERNELS=triton   the kernel; a one-line ValueError where triton is missing or it does not apply.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Iterable

import torch

MODES = ("auto", "torch", "triton")
KERNEL_DTYPES = {
    "linear_scan": (torch.float32, torch.bfloat16, torch.float16, torch.complex64),  # float32 arithmetic
    "selective_scan": (torch.float32, torch.bfloat16, torch.float16),  # float32 arithmetic
    "delta_rule_state": (torch.float32, torch.bfloat16, torch.float16),  # float32 sums (16-bit products for 16-bit)
    "cauchy": (torch.complex64,),  # float32 arithmetic on the real and imaginary parts
}
# Kernels whose real-size CUDA tests (tests/test_kernels_*.py, skipped without a GPU) have passed on a GPU. `auto`
# sends CUDA tensors only to these: a kernel checked through the interpreter but never run compiled on a GPU is
# used on CUDA only when asked for (SSMBENCH_KERNELS=triton). linear_scan has not run on a GPU yet (issue 17).
VERIFIED_ON_GPU: frozenset[str] = frozenset()
_used: set[str] = set()


def mode() -> str:
    """The value of SSMBENCH_KERNELS (auto when unset); ValueError for anything but auto, torch, triton."""
    value = os.environ.get("SSMBENCH_KERNELS", "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"SSMBENCH_KERNELS={value!r}: give one of {', '.join(MODES)}")
    return value


def parse_choice(value: str | None) -> str | None:
    """The config key `kernels` checked: None, or auto, torch or triton (lower case). A one-line ValueError for
    another value, or for triton where triton is not installed."""
    if value is None:
        return None
    chosen = str(value).strip().lower()
    if chosen not in MODES:
        raise ValueError(f"kernels={value!r} must be one of {', '.join(MODES)}, or null ($SSMBENCH_KERNELS, else auto)")
    if chosen == "triton" and not triton_available():
        raise ValueError("kernels=triton but triton is not installed: pip install 'ssmbench[kernels]', or kernels=auto")
    return chosen


def choose(value: str | None) -> None:
    """Apply the config key `kernels` (parse_choice): None leaves SSMBENCH_KERNELS as the environment has it;
    auto, torch or triton sets it for this process and the processes it starts (DDP ranks)."""
    chosen = parse_choice(value)
    if chosen is not None:
        os.environ["SSMBENCH_KERNELS"] = chosen


def launch(built: dict, name: str, device: torch.device, grid: tuple, *args, **kwargs) -> None:
    """Launch the kernel `name` of a module's {(name, interpreted): kernel} table `built` on tensors of `device`:
    the interpreted one for CPU tensors; the compiled one for CUDA tensors, with their device current (Triton
    launches on the current CUDA device, which need not be theirs)."""
    if device.type == "cpu":
        built[name, True][grid](*args, **kwargs)
        return
    with torch.cuda.device(device):
        built[name, False][grid](*args, **kwargs)


def tile(kernel: str, blocks: dict[str, tuple[int, ...]], device: torch.device, **given: int | None) -> tuple[int, ...]:
    """The tile a kernel module launches with on tensors of `device`: each size given, else the module's default for
    the device (blocks["cuda"] or blocks["cpu"], in the order of `given`); a one-line ValueError unless every size is
    a power of two."""
    defaults = blocks["cpu" if device.type == "cpu" else "cuda"]
    sizes = tuple(size or default for size, default in zip(given.values(), defaults))
    if not all(n >= 1 and n & (n - 1) == 0 for n in sizes):
        raise ValueError(f"triton {kernel}: {' and '.join(given)} must be powers of two, "
                         f"got {' and '.join(map(str, sizes))}")
    return sizes


def used() -> list[str]:
    """The names of the kernels that use_kernel has chosen in this process so far, sorted."""
    return sorted(_used)


def triton_available() -> bool:
    """True if the triton package is installed (looked up, not imported)."""
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """True if TRITON_INTERPRET asks for Triton's interpreter (1, true, on or yes, as Triton reads it)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on", "yes")


def _unsupported(tensors: list[torch.Tensor], dtypes: tuple[torch.dtype, ...]) -> str | None:
    """Why the kernel cannot run on `tensors` (None if it can)."""
    devices = {t.device for t in tensors}
    if len(devices) != 1:
        return f"tensors on several devices ({', '.join(sorted(map(str, devices)))})"
    device = devices.pop()
    if device.type == "cpu" and not interpreting():
        return "CPU tensors (set TRITON_INTERPRET=1 to run the kernel in Triton's interpreter)"
    if device.type not in ("cpu", "cuda"):
        return f"{device.type} tensors (the kernels run on CUDA)"
    wrong = sorted({str(t.dtype).removeprefix("torch.") for t in tensors if t.dtype not in dtypes})
    if wrong:
        return f"{', '.join(wrong)} tensors (it takes {', '.join(str(d).removeprefix('torch.') for d in dtypes)})"
    return None


def use_kernel(name: str, tensors: Iterable[torch.Tensor | None]) -> bool:
    """The dispatch rule (module docstring) for the kernel `name` (a key of KERNEL_DTYPES) on `tensors`
    (None entries are skipped). ValueError in one line where SSMBENCH_KERNELS=triton cannot be obeyed."""
    chosen = mode()
    if chosen == "torch":
        return False
    given = [t for t in tensors if t is not None]
    reason = _unsupported(given, KERNEL_DTYPES[name])
    if chosen == "auto":
        on_cuda = any(t.is_cuda for t in given)
        if not (reason is None and triton_available() and (name in VERIFIED_ON_GPU or not on_cuda)):
            return False
        _used.add(name)
        return True
    if not triton_available():
        raise ValueError("SSMBENCH_KERNELS=triton but triton is not installed: pip install 'ssmbench[kernels]', "
                         "or set SSMBENCH_KERNELS=auto")
    if reason is not None:
        raise ValueError(f"SSMBENCH_KERNELS=triton: the {name} kernel does not take {reason}; "
                         f"set SSMBENCH_KERNELS=auto to use the torch path there")
    _used.add(name)
    return True
