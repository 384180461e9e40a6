"""GPU benchmark of the fused Triton kernels (ssmbench.kernels) against the torch paths: forward + backward.

    .venv/bin/python benchmarks/gpu.py [--quick] [--repeat N] [--peers]

linear_scan at issue 17's shape B=8, L=4096, D=1536 (--quick: L=1024), float32 and bfloat16, a time-varying
(B, L, D) or constant (D,), |a| in [0.9, 0.999] with a random sign, h0 = 0: forward + backward of <w, h>
(h.backward(w)) by
    torch     core.scan.linear_scan with SSMBENCH_KERNELS=torch (the chunked scan; bf16 computes in bf16)
    triton    ssmbench.kernels.linear_scan (float32 arithmetic)
    accel     --peers, time-varying a only: accelerated-scan's Triton scan (accelerated_scan.triton.scan, its
              (B, D, L) layout, inputs already transposed), where the package is installed
Columns: median wall ms (after a warm-up, which also compiles), the CUDA allocator's peak above the inputs
(MiB), torch / method time, and the error of h against the torch path run in float32 on the same inputs
(max over channels of max_t |h - h32| / max_t |h32|). Exits with one line where there is no CUDA device.
"""

from __future__ import annotations

import argparse
import importlib.util
import os

import torch

import measure
from ssmbench.core.scan import linear_scan

B, D = 8, 1536


def inputs(length: int, dtype: torch.dtype, constant_a: bool):
    g = torch.Generator(device="cuda").manual_seed(0)
    a_shape = (D,) if constant_a else (B, length, D)
    sign = torch.randint(0, 2, a_shape, generator=g, device="cuda") * 2 - 1
    a = (0.9 + 0.099 * torch.rand(a_shape, generator=g, device="cuda")) * sign
    b, w = (torch.randn(B, length, D, generator=g, device="cuda") for _ in range(2))
    return [x.to(dtype) for x in (a, b, w)]


def torch_path(a, b):
    saved = os.environ.get("SSMBENCH_KERNELS")
    os.environ["SSMBENCH_KERNELS"] = "torch"
    try:
        return linear_scan(a, b)
    finally:
        os.environ.pop("SSMBENCH_KERNELS")
        if saved is not None:
            os.environ["SSMBENCH_KERNELS"] = saved


def triton_path(a, b):
    from ssmbench.kernels.linear_scan import linear_scan as fused

    return fused(a.reshape((1,) * (3 - a.dim()) + tuple(a.shape)), b)


def accelerated_scan_path(a, b):
    """h for (a, b) in accelerated-scan's (B, D, L) layout, returned in it (only the scan is timed)."""
    from accelerated_scan.triton import scan

    return scan(a, b)


def fwd_bwd(fn, a, b, w):
    a, b = a.detach().requires_grad_(), b.detach().requires_grad_()
    h = fn(a, b)
    h.backward(w)
    return h.detach()


def channel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x.float() - ref).abs().amax(dim=1) / ref.abs().amax(dim=1)).max().item()


def linear_scan_table(length: int, repeat: int, peers: bool) -> None:
    print(f"linear_scan forward+backward, B={B}, L={length}, D={D}, |a| in [0.9, 0.999], random sign")
    header = f"{'dtype':>9} {'a':>9} {'method':>7} {'ms':>8} {'peak MiB':>9} {'speed-up':>9} {'err h':>9}"
    print(header)
    print("-" * len(header))
    has_accel = importlib.util.find_spec("accelerated_scan") is not None
    for dtype in (torch.float32, torch.bfloat16):
        for constant_a in (False, True):
            a, b, w = inputs(length, dtype, constant_a)
            ref = torch_path(a.float(), b.float())
            methods = {"torch": (torch_path, (a, b, w)), "triton": (triton_path, (a, b, w))}
            if peers and has_accel and not constant_a:
                layout = [x.transpose(1, 2).contiguous() for x in (a, b, w)]
                methods["accel"] = (accelerated_scan_path, layout)
            base = None
            for name, (fn, args) in methods.items():
                seconds = measure.timed(lambda: fwd_bwd(fn, *args), "cuda", repeat)[0]
                peak = measure.cuda_peak_bytes(lambda: fwd_bwd(fn, *args)) / 2**20
                h = fwd_bwd(fn, *args)
                h = h.transpose(1, 2) if name == "accel" else h
                base = base or seconds
                print(f"{str(dtype).removeprefix('torch.'):>9} {'(D,)' if constant_a else '(B,L,D)':>9} {name:>7} "
                      f"{1e3 * seconds:>8.2f} {peak:>9.0f} {base / seconds:>9.2f} {channel_err(h, ref):>9.1e}")
    if peers and not has_accel:
        print("accel: accelerated-scan is not installed (pip install accelerated-scan)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="L = 1024 and one timed repeat")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--peers", action="store_true", help="also the peers' kernels that are installed")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py: no CUDA device here; run it on a machine with an NVIDIA GPU")
    if importlib.util.find_spec("triton") is None:
        raise SystemExit("benchmarks/gpu.py: triton is not installed; pip install 'ssmbench[kernels]'")
    print(f"{torch.cuda.get_device_name()}; torch {torch.__version__}")
    linear_scan_table(1024 if args.quick else 4096, 1 if args.quick else args.repeat, args.peers)


if __name__ == "__main__":
    main()
