"""GPU benchmark of the fused Triton kernels (ssmbench.kernels) against the torch paths: forward + backward.

    .venv/bin/python benchmarks/gpu.py [--quick] [--repeat N] [--peers]

linear_scan at issue 17's shape B=8, L=4096, D=1536 (--quick: L=1024), float32 and bfloat16, a time-varying
(B, L, D) or constant (D,), |a| in [0.9, 0.999] with a random sign, h0 = 0: forward + backward of <w, h>
(h.backward(w)) by
    torch     core.scan.linear_scan with SSMBENCH_KERNELS=torch (the chunked scan; bf16 computes in bf16)
    triton    ssmbench.kernels.linear_scan (float32 arithmetic)
    accel     --peers, time-varying a only: accelerated-scan's Triton scan (accelerated_scan.scalar.scan in 0.3,
              accelerated_scan.triton.scan before; its
              (B, D, L) layout, inputs already transposed), where the package is installed
Columns: median wall ms (after a warm-up, which also compiles), the CUDA allocator's peak above the inputs
(MiB), torch / method time, and the error of h against the torch path run in float32 on the same inputs
(max over channels of max_t |h - h32| / max_t |h32|).

The chunkwise delta rule and gated delta rule (core.delta_rule, chunk C = 64) at issue 17's shape B=8, H=16,
L=4096 (--quick: L=1024), Dk=Dv=128, float32 and bfloat16 inputs (core computes in float32 either way): unit
keys, beta in (0, 1), g = logsigmoid(2 N(0, 1) + 2); forward + backward of <w, o> (o.backward(w)) by
    torch     delta_rule_chunkwise / gated_delta_rule_chunkwise with SSMBENCH_KERNELS=torch (the loop over chunks)
    triton    the same with SSMBENCH_KERNELS=triton (the state pass by ssmbench.kernels.delta_rule_state)
    fla       --peers: flash-linear-attention's fla.ops.delta_rule.chunk_delta_rule and
              fla.ops.gated_delta_rule.chunk_gated_delta_rule with scale=1 (ours does not scale q), in their
              (B, T, H, D) layout (inputs already transposed), where the package is installed; a row saying why
              where it refuses the inputs (some versions refuse float32)
Columns as above; the error is that of o against the torch path run in float32 on the same inputs.

The selective scan (core.selective_scan, Mamba-1) at issue 17's shape B=8, L=4096, D=1536, N=16 (--quick:
L=1024), bfloat16 and float32 inputs, delta = softplus(N(0, 1) - 4), A = -(1 .. N) per channel (S4D-Real, as
Mamba initializes it), B, C, D, z ~ N(0, 1): forward + backward of <w, y> by
    torch     core.selective_scan.selective_scan with SSMBENCH_KERNELS=torch (the chunked torch path)
    triton    ssmbench.kernels.selective_scan at its default tile, and at every tile of --tiles (untuned so far)
Columns as above; the error is that of y against the torch path in float32.

The S4 kernel (core.ssm_kernel.kernel_dplr with conj_sym, as the S4 layer calls it) at issue 17's shape H=256,
N=64 (32 conjugate pairs; DPLR-LegS, C~ ~ CN(0, 1), dt log-uniform in [1e-3, 1e-1], benchmarks/s4_kernel.py's
inputs), L=4096 (--quick: L=1024), complex64: forward + backward of <1, K> into every parameter by
    torch Cauchy     SSMBENCH_KERNELS=torch (core.cauchy's chunked backend)
    triton Cauchy    SSMBENCH_KERNELS=triton (the Cauchy sums by ssmbench.kernels.cauchy; the rest in torch)
next to the FFT convolution the kernel feeds (core.fftconv.causal_conv, u (B=8, H, L) float32, K (H, L)).
Columns: median wall ms, peak MiB, time / the FFT convolution's (issue 17's target: <= 1 for the kernel), and
the error of K against the torch Cauchy's (max |K - K_torch| / max |K_torch|).

Peers offline. GPU machines may have no network: --peers first installs the peers that are missing from the
wheels in benchmarks/peers/ (ignored by git; fetch them where there is a network with
    pip download --no-deps fla-core==0.6.0 einops accelerated-scan==0.3.1 -d benchmarks/peers
fla-core holds flash-linear-attention's fla.ops; einops is its one dependency).
Exits with one line where there is no CUDA device.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import torch

import measure
from ssmbench.core.delta_rule import delta_rule_chunkwise, gated_delta_rule_chunkwise
from ssmbench.core.fftconv import causal_conv
from ssmbench.core.scan import linear_scan
from ssmbench.core.selective_scan import selective_scan
from ssmbench.core.ssm_kernel import kernel_dplr

B, D = 8, 1536
HEADS, DK, DV = 16, 128, 128
N_STATE = 16
PEERS = {"fla": "fla-core", "einops": "einops", "accelerated_scan": "accelerated-scan"}  # module: distribution
PEER_WHEELS = Path(__file__).resolve().parent / "peers"


def inputs(length: int, dtype: torch.dtype, constant_a: bool):
    g = torch.Generator(device="cuda").manual_seed(0)
    a_shape = (D,) if constant_a else (B, length, D)
    sign = torch.randint(0, 2, a_shape, generator=g, device="cuda") * 2 - 1
    a = (0.9 + 0.099 * torch.rand(a_shape, generator=g, device="cuda")) * sign
    b, w = (torch.randn(B, length, D, generator=g, device="cuda") for _ in range(2))
    return [x.to(dtype) for x in (a, b, w)]


def with_kernels(choice: str, fn, *args):
    """fn(*args) with SSMBENCH_KERNELS=choice."""
    saved = os.environ.get("SSMBENCH_KERNELS")
    os.environ["SSMBENCH_KERNELS"] = choice
    try:
        return fn(*args)
    finally:
        os.environ.pop("SSMBENCH_KERNELS")
        if saved is not None:
            os.environ["SSMBENCH_KERNELS"] = saved


def torch_path(a, b):
    return with_kernels("torch", linear_scan, a, b)


def triton_path(a, b):
    from ssmbench.kernels.linear_scan import linear_scan as fused

    return fused(a.reshape((1,) * (3 - a.dim()) + tuple(a.shape)), b)


def accelerated_scan_path(a, b):
    """h for (a, b) in accelerated-scan's (B, D, L) layout, returned in it (only the scan is timed)."""
    try:
        from accelerated_scan.scalar import scan  # 0.3
    except ImportError:
        from accelerated_scan.triton import scan  # earlier releases

    return scan(a, b)


def peer_runs(label: str, name: str, run) -> bool:
    """Run a peer's first forward + backward; where it fails (not importable, inputs refused, a compile error or
    out of resources), print a row saying why and return False, so the other methods and tables still run."""
    try:
        run()
    except Exception as error:  # noqa: BLE001 - any failure of a peer is reported in its row
        print(f"{label} {name:>7} failed: {type(error).__name__}: {(str(error).splitlines() or [''])[0][:100]}")
        return False
    return True


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
            label = f"{str(dtype).removeprefix('torch.'):>9} {'(D,)' if constant_a else '(B,L,D)':>9}"
            for name, (fn, args) in methods.items():
                if name == "accel" and not peer_runs(label, name, lambda: fwd_bwd(fn, *args)):
                    continue
                seconds = measure.timed(lambda: fwd_bwd(fn, *args), "cuda", repeat)[0]
                peak = measure.cuda_peak_bytes(lambda: fwd_bwd(fn, *args)) / 2**20
                h = fwd_bwd(fn, *args)
                h = h.transpose(1, 2) if name == "accel" else h
                base = base or seconds
                print(f"{label} {name:>7} "
                      f"{1e3 * seconds:>8.2f} {peak:>9.0f} {base / seconds:>9.2f} {channel_err(h, ref):>9.1e}")
    if peers and not has_accel:
        print("accel: accelerated-scan is not installed (pip install accelerated-scan)")


def rule_inputs(length: int, dtype: torch.dtype):
    """q, k (unit norm), v, beta, g in (B, H, L, ...) and the loss weight w like o, in `dtype`."""
    g = torch.Generator(device="cuda").manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g, device="cuda")

    q, v, w = randn(B, HEADS, length, DK), randn(B, HEADS, length, DV), randn(B, HEADS, length, DV)
    k = torch.nn.functional.normalize(randn(B, HEADS, length, DK), dim=-1)
    beta = torch.sigmoid(randn(B, HEADS, length))
    log_decay = torch.nn.functional.logsigmoid(2 * randn(B, HEADS, length) + 2)
    return [x.to(dtype) for x in (q, k, v, beta, log_decay, w)]


def ours(gated: bool, kernels: str):
    """o of our chunkwise rule (chunk 64) under SSMBENCH_KERNELS=kernels, inputs (q, k, v, beta, g)."""
    if gated:
        return lambda q, k, v, beta, g: with_kernels(kernels, gated_delta_rule_chunkwise, q, k, v, beta, g)[0]
    return lambda q, k, v, beta, g: with_kernels(kernels, delta_rule_chunkwise, q, k, v, beta)[0]


def fla(gated: bool):
    """o of flash-linear-attention's chunk rule, inputs and output in its (B, T, H, ...) layout, scale 1."""
    import inspect

    if gated:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule as rule
    else:
        from fla.ops.delta_rule import chunk_delta_rule as rule
    layout = {"head_first": False} if "head_first" in inspect.signature(rule).parameters else {}
    if gated:
        return lambda q, k, v, beta, g: rule(q, k, v, g=g, beta=beta, scale=1.0, **layout)[0]
    return lambda q, k, v, beta, g: rule(q, k, v, beta=beta, scale=1.0, **layout)[0]


def rule_fwd_bwd(fn, q, k, v, beta, g, w):
    leaves = [x.detach().requires_grad_() for x in (q, k, v, beta, g)]
    o = fn(*leaves)
    o.backward(w)
    return o.detach()


def delta_rule_table(length: int, repeat: int, peers: bool) -> None:
    print(f"\nchunkwise delta rule forward+backward, B={B}, H={HEADS}, L={length}, Dk={DK}, Dv={DV}, chunk 64")
    header = f"{'dtype':>9} {'rule':>6} {'method':>7} {'ms':>8} {'peak MiB':>9} {'speed-up':>9} {'err o':>9}"
    print(header)
    print("-" * len(header))
    has_fla = importlib.util.find_spec("fla") is not None
    for dtype in (torch.float32, torch.bfloat16):
        for gated in (False, True):
            inputs = rule_inputs(length, dtype)
            ref = rule_fwd_bwd(ours(gated, "torch"), *(x.float() for x in inputs))
            methods = {"torch": (ours(gated, "torch"), inputs), "triton": (ours(gated, "triton"), inputs)}
            if peers and has_fla:
                methods["fla"] = (lambda *x, gated=gated: fla(gated)(*x), [x.transpose(1, 2).contiguous() for x in inputs])
            base = None
            label = f"{str(dtype).removeprefix('torch.'):>9} {'gated' if gated else 'delta':>6}"
            for name, (fn, args) in methods.items():
                if name == "fla" and not peer_runs(label, name, lambda: rule_fwd_bwd(fn, *args)):
                    continue
                o = rule_fwd_bwd(fn, *args)
                seconds = measure.timed(lambda: rule_fwd_bwd(fn, *args), "cuda", repeat)[0]
                peak = measure.cuda_peak_bytes(lambda: rule_fwd_bwd(fn, *args)) / 2**20
                o = o.transpose(1, 2) if name == "fla" else o
                err = channel_err(o.flatten(0, 1), ref.flatten(0, 1))
                base = base or seconds
                print(f"{label} {name:>7} {1e3 * seconds:>8.2f} {peak:>9.0f} {base / seconds:>9.2f} {err:>9.1e}")
    if peers and not has_fla:
        print("fla: flash-linear-attention is not installed (pip install flash-linear-attention)")


def scan_inputs(length: int, dtype: torch.dtype):
    """u, delta, A (float32), B, C, D (float32), z and the loss weight w of the selective scan table."""
    g = torch.Generator(device="cuda").manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g, device="cuda")

    delta = torch.nn.functional.softplus(randn(B, length, D) - 4)
    A = -torch.arange(1, N_STATE + 1, device="cuda", dtype=torch.float32).repeat(D, 1)
    u, z, w = randn(B, length, D), randn(B, length, D), randn(B, length, D)
    Bm, Cm = randn(B, length, N_STATE), randn(B, length, N_STATE)
    return [u.to(dtype), delta.to(dtype), A, Bm.to(dtype), Cm.to(dtype), randn(D), z.to(dtype)], w.to(dtype)


def scan_fwd_bwd(fn, tensors, w):
    leaves = [x.detach().requires_grad_() for x in tensors]
    y = fn(*leaves)
    y.backward(w)
    return y.detach()


def selective_scan_table(length: int, repeat: int, tiles: list[tuple[int, int]]) -> None:
    from ssmbench.kernels.selective_scan import BLOCKS, selective_scan as fused

    print(f"\nselective scan forward+backward, B={B}, L={length}, D={D}, N={N_STATE}, with D and z")
    header = f"{'dtype':>9} {'method':>16} {'ms':>8} {'peak MiB':>9} {'speed-up':>9} {'err y':>9}"
    print(header)
    print("-" * len(header))
    for dtype in (torch.bfloat16, torch.float32):
        tensors, w = scan_inputs(length, dtype)
        ref = scan_fwd_bwd(lambda *x: with_kernels("torch", selective_scan, *x), [x.float() for x in tensors],
                           w.float())
        methods = {"torch": lambda *x: with_kernels("torch", selective_scan, *x)}
        for block_t, block_d in dict.fromkeys([BLOCKS["cuda"], *tiles]):
            methods[f"triton {block_t}x{block_d}"] = (
                lambda *x, t=block_t, d=block_d: fused(*x, block_t=t, block_d=d)[0])
        base = None
        for name, fn in methods.items():
            y = scan_fwd_bwd(fn, tensors, w)
            seconds = measure.timed(lambda: scan_fwd_bwd(fn, tensors, w), "cuda", repeat)[0]
            peak = measure.cuda_peak_bytes(lambda: scan_fwd_bwd(fn, tensors, w)) / 2**20
            base = base or seconds
            print(f"{str(dtype).removeprefix('torch.'):>9} {name:>16} {1e3 * seconds:>8.2f} {peak:>9.0f} "
                  f"{base / seconds:>9.2f} {channel_err(y, ref):>9.1e}")


def s4_kernel_fwd_bwd(kernels: str, inputs: list[torch.Tensor], length: int) -> torch.Tensor:
    """K = kernel_dplr(Lambda, P, P, B, C~, dt, L, conj_sym) under SSMBENCH_KERNELS=kernels and the gradients of
    <1, K> into all five parameters (torch.autograd.grad: nothing accumulates between runs); returns K."""
    Lambda, P, B_ssm, C, dt = inputs  # B_ssm: the SSM's input vector (B is this script's batch size)
    K = with_kernels(kernels, lambda: kernel_dplr(Lambda, P, P, B_ssm, C, dt, length, conj_sym=True))
    torch.autograd.grad(K, inputs, torch.ones_like(K))
    return K.detach()


def conv_fwd_bwd(u: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    u, K = u.detach().requires_grad_(), K.detach().requires_grad_()
    y = causal_conv(u, K)
    y.backward(torch.ones_like(y))
    return y.detach()


def s4_kernel_table(length: int, repeat: int) -> None:
    from s4_kernel import H as S4_H, N as S4_N, kernel_inputs

    print(f"\nS4 kernel (kernel_dplr, conj_sym) forward+backward, H={S4_H}, N={S4_N}, L={length}, complex64; "
          f"the FFT convolution it feeds at B={B}")
    header = f"{'part':>22} {'ms':>8} {'peak MiB':>9} {'/ FFT conv':>10} {'err K':>9}"
    print(header)
    print("-" * len(header))
    g = torch.Generator(device="cuda").manual_seed(0)
    u = torch.randn(B, S4_H, length, generator=g, device="cuda")
    K = torch.randn(S4_H, length, generator=g, device="cuda")
    inputs = kernel_inputs(torch.device("cuda"))
    ref = s4_kernel_fwd_bwd("torch", inputs, length)
    parts = {"kernel, torch Cauchy": lambda: s4_kernel_fwd_bwd("torch", inputs, length),
             "kernel, triton Cauchy": lambda: s4_kernel_fwd_bwd("triton", inputs, length),
             f"FFT convolution, B={B}": lambda: conv_fwd_bwd(u, K)}
    timings = {name: (measure.timed(run, "cuda", repeat)[0], measure.cuda_peak_bytes(run) / 2**20)
               for name, run in parts.items()}
    conv_seconds = timings[f"FFT convolution, B={B}"][0]
    for name, (seconds, peak) in timings.items():
        err = f"{((parts[name]() - ref).abs().max() / ref.abs().max()).item():>9.1e}" if "kernel" in name else "-"
        print(f"{name:>22} {1e3 * seconds:>8.2f} {peak:>9.0f} {seconds / conv_seconds:>10.2f} {err:>9}")


def install_missing_peers() -> None:
    """pip install, from the wheels in PEER_WHEELS and nothing else, the peers that are not importable."""
    missing = [dist for module, dist in PEERS.items() if importlib.util.find_spec(module) is None]
    if not missing:
        return
    if not any(PEER_WHEELS.glob("*.whl")):
        print(f"peers {', '.join(missing)}: not installed and no wheels in {PEER_WHEELS} (see this script's docstring)")
        return
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                           "--find-links", str(PEER_WHEELS), *missing], capture_output=True, text=True)
    print(f"peers installed from {PEER_WHEELS}: {', '.join(missing)}" if done.returncode == 0 else
          f"peers {', '.join(missing)}: pip could not install them from {PEER_WHEELS}: "
          f"{(done.stderr.strip().splitlines() or ['?'])[-1]}")
    importlib.invalidate_caches()


def tile(text: str) -> tuple[int, int]:
    block_t, _, block_d = text.partition("x")
    return int(block_t), int(block_d)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="L = 1024 and one timed repeat")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--peers", action="store_true",
                        help="also the peers' kernels (installed first from benchmarks/peers/ where missing)")
    parser.add_argument("--tiles", type=lambda text: [tile(t) for t in text.split(",")],
                        default=[(8, 16), (16, 32), (32, 16), (32, 32)],
                        help="selective scan tiles to time besides the default, STEPSxCHANNELS,... (powers of two)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py: no CUDA device here; run it on a machine with an NVIDIA GPU")
    if importlib.util.find_spec("triton") is None:
        raise SystemExit("benchmarks/gpu.py: triton is not installed; pip install 'ssmbench[kernels]'")
    print(f"{torch.cuda.get_device_name()}; torch {torch.__version__}")
    if args.peers:
        install_missing_peers()
    length, repeat = (1024, 1) if args.quick else (4096, args.repeat)
    linear_scan_table(length, repeat, args.peers)
    delta_rule_table(length, repeat, args.peers)
    selective_scan_table(length, repeat, args.tiles)
    s4_kernel_table(length, repeat)


if __name__ == "__main__":
    main()
