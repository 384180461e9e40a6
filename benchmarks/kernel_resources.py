"""Compile every Triton kernel of ssmbench.kernels for a GPU architecture with the installed triton, without a GPU,
exactly as the models launch it at issue 17's shapes, and print what each needs per thread: registers, stack
(spills), static and dynamic shared memory.

    .venv/bin/python benchmarks/kernel_resources.py [--arch 90] [--tiles]

How the launches are found: core's own functions run on meta tensors (shapes and strides, no data) at issue 17's
shapes, with ssmbench.kernels.use_kernel answering yes and every kernel module's launch recording its arguments
instead of launching; a backward pass records the backward kernels. Each recorded launch is then compiled the way
Triton's JIT would compile it on a GPU: every argument specialized by triton's own rule (an integer equal to 1
becomes a constant, a multiple of 16 and a 16-byte-aligned pointer are marked divisible by 16, which is what lets
the compiler vectorize loads and pipeline them), the constexprs and launch options as the module gave them.
    linear_scan        core.scan.linear_scan, (8, 4096, 1536), time-varying a, float32 and complex64
    selective_scan     core.selective_scan.selective_scan, B=8, L=4096, D=1536, N=16, bfloat16, with D and z
    delta_rule_state   core.delta_rule.gated_delta_rule_chunkwise and delta_rule_chunkwise, B=8, H=16, L=4096,
                       Dk=Dv=128, bfloat16 inputs (core runs the state pass in float32)
    cauchy             core.ssm_kernel.kernel_dplr as the S4 layer calls it, H=256, N=64, L=4096
--tiles also compiles each module's other tiles worth trying (the same launches with other block sizes).

What this shows without a GPU: that a kernel builds for the architecture with this triton (a GPU machine may have
another version: the lent machines' image has triton 3.6), and where a tile spills (STACK > 0) or needs more
shared memory than a GPU has (H100: 227 KiB per block). It times nothing: speed needs a GPU (benchmarks/gpu.py).
Registers and stack are read from the cubin with the cuobjdump bundled with triton. The compile time is that of
triton.compile into an empty cache on this machine's CPU: what a user waits for at the first step that uses the
kernel (the JIT compiles each specialization once, then reads it from ~/.triton/cache).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import CUDABackend
from triton.compiler import ASTSource

try:  # the JIT's own specialization rule, in triton's C++ core since about triton 3.4
    from triton._C.libtriton import native_specialize_impl
except ImportError:
    sys.exit(f"kernel_resources.py needs a newer triton than {triton.__version__} (3.6 and 3.9 work): "
             f"pip install -U 'triton>=3.6'")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from s4_kernel import kernel_inputs  # noqa: E402
from ssmbench import kernels  # noqa: E402
from ssmbench.core.delta_rule import delta_rule_chunkwise, gated_delta_rule_chunkwise  # noqa: E402
from ssmbench.core.scan import linear_scan  # noqa: E402
from ssmbench.core.selective_scan import selective_scan  # noqa: E402
from ssmbench.core.ssm_kernel import kernel_dplr  # noqa: E402
from ssmbench.kernels import cauchy, delta_rule_state, linear_scan as linear_scan_kernels, selective_scan as ss_kernels  # noqa: E402,E501

MODULES = (linear_scan_kernels, ss_kernels, delta_rule_state, cauchy)
META = torch.device("meta")
LAUNCH_OPTIONS = ("num_warps", "num_stages", "num_ctas", "maxnreg")
# Other tiles worth trying, per module: {constexpr: value} replacing the module's own, and launch options.
TILES = {
    "linear_scan": [(dict(BLOCK_T=128, BLOCK_D=32), {})],
    "selective_scan": [(dict(BLOCK_T=8, BLOCK_D=16), dict(num_warps=4)), (dict(BLOCK_T=32, BLOCK_D=16), {}),
                       (dict(BLOCK_T=16, BLOCK_D=32), {})],
    "delta_rule_state": [(dict(BLOCK_V=16), dict(num_warps=8)), (dict(BLOCK_V=32), dict(num_warps=4)),
                         (dict(BLOCK_V=64), dict(num_warps=8))],
    "cauchy": [(dict(BLOCK_L=64, BLOCK_N=32), {})],
}


@dataclass
class Launch:
    """One recorded kernel launch: the module's short name, the kernel's name in the module's table, the compiled
    kernel (a JITFunction), its positional arguments and its keyword arguments (constexprs and launch options)."""

    module: str
    name: str
    fn: object
    args: tuple
    kwargs: dict = field(default_factory=dict)


@contextmanager
def recording(launches: list[Launch]):
    """Within: ssmbench.kernels.use_kernel says yes to every kernel and each kernel module's `launch` appends a Launch
    to `launches` instead of launching (outputs stay unwritten: meta tensors have no data)."""
    saved = kernels.use_kernel, [m.launch for m in MODULES]

    def record_for(module):
        def record(built, name, device, grid, *args, **kwargs):
            launches.append(Launch(module.__name__.rsplit(".", 1)[-1], name, built[name, False], args, kwargs))
        return record

    kernels.use_kernel = lambda name, tensors: True
    for module in MODULES:
        module.launch = record_for(module)
    try:
        yield
    finally:
        kernels.use_kernel = saved[0]
        for module, launch in zip(MODULES, saved[1]):
            module.launch = launch


def _meta(*shape, dtype=torch.float32) -> torch.Tensor:
    return torch.empty(*shape, dtype=dtype, device=META, requires_grad=True)


def _backward(out: torch.Tensor) -> None:
    (out.real if out.is_complex() else out).float().sum().backward()


def workloads() -> dict[str, callable]:
    """{label: a function that runs core's forward and backward on meta tensors at issue 17's shapes}."""
    def scan(dtype):
        return lambda: _backward(linear_scan(_meta(8, 4096, 1536, dtype=dtype), _meta(8, 4096, 1536, dtype=dtype)))

    def mamba():
        b, length, d, n = 8, 4096, 1536, 16
        u, delta, z = (_meta(b, length, d, dtype=torch.bfloat16) for _ in range(3))
        y = selective_scan(u, delta, _meta(d, n), _meta(b, length, n, dtype=torch.bfloat16),
                              _meta(b, length, n, dtype=torch.bfloat16), _meta(d), z)
        _backward(y)

    def rule(gated):
        b, h, length, dk = 8, 16, 4096, 128
        q, k, v = (_meta(b, h, length, dk, dtype=torch.bfloat16) for _ in range(3))
        beta = _meta(b, h, length, dtype=torch.bfloat16)
        if gated:
            return lambda: _backward(gated_delta_rule_chunkwise(q, k, v, beta, _meta(b, h, length,
                                                                                     dtype=torch.bfloat16))[0])
        return lambda: _backward(delta_rule_chunkwise(q, k, v, beta)[0])

    def s4():
        params = [p.detach().to(META).requires_grad_() for p in kernel_inputs(torch.device("cpu"))]
        Lambda, P, B, C, dt = params
        _backward(kernel_dplr(Lambda, P, P, B, C, dt, 4096, conj_sym=True))

    return {"linear_scan float32": scan(torch.float32), "linear_scan complex64": scan(torch.complex64),
            "selective_scan bfloat16": mamba, "gated delta rule": rule(True), "delta rule": rule(False),
            "S4 kernel": s4}


def specialized(launch: Launch) -> tuple[ASTSource, dict]:
    """The launch as Triton's JIT compiles it (the specialization rule of triton's own native_specialize_impl for
    every argument that is not a declared constexpr): the ASTSource and the launch options."""
    params = launch.fn.params
    values = list(launch.args) + [launch.kwargs[p.name] for p in params[len(launch.args):]]
    signature, constexprs, attrs = {}, {}, {}
    for i, (param, value) in enumerate(zip(params, values)):
        kind, spec = ("constexpr", None) if param.is_constexpr else native_specialize_impl(CUDABackend, value, False,
                                                                                            True, True)
        signature[param.name] = kind
        if kind == "constexpr":
            constexprs[(i,)] = value
        elif spec:
            attrs[(i,)] = CUDABackend.parse_attr(spec)
    options = {k: v for k, v in launch.kwargs.items() if k in LAUNCH_OPTIONS}
    return ASTSource(fn=launch.fn, signature=signature, constexprs=constexprs, attrs=attrs), options


def resources(cubin: bytes) -> dict[str, int]:
    """REG, STACK and SHARED (static) of the one function in a cubin, by cuobjdump --dump-resource-usage."""
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([str(tool), "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    return {key: int(value) for key, value in re.findall(r"\b(REG|STACK|SHARED):(\d+)", text)}


def variants(launch: Launch, tiles: bool) -> list[Launch]:
    """The launch as recorded, and with --tiles the module's other tiles (TILES) in its place."""
    found = [launch]
    for consts, options in TILES[launch.module] if tiles else []:
        kwargs = launch.kwargs | consts | options
        found.append(Launch(launch.module, launch.name, launch.fn, launch.args, kwargs))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90: H100 / H200)")
    parser.add_argument("--tiles", action="store_true", help="also the other tiles worth trying")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)  # triton's notices about its own defaults
    # A cache of its own, removed at the end, so that every kernel is compiled here: its compile time is a first use's.
    with tempfile.TemporaryDirectory(prefix="kernel_resources_") as cache:
        os.environ["TRITON_CACHE_DIR"] = cache
        report(args.arch, args.tiles)
        if not any(Path(cache).iterdir()):
            sys.exit("triton did not compile into the cache given by TRITON_CACHE_DIR: the compile times above may "
                     "be cache reads")


def report(arch: int, tiles: bool) -> None:
    """Compile every recorded launch (with `tiles`, its other tiles too) for sm_<arch> and print a row for each."""
    print(f"triton {triton.__version__}, sm_{arch}; per thread: registers, stack bytes (spills); per block: "
          f"shared KiB (dynamic + static); seconds to compile on this CPU (a first use's wait, cache empty)")
    print(f"{'workload':<24} {'kernel':<28} {'tile':<34} {'launch':<26} {'reg':>4} {'stack':>6} {'shared':>7} "
          f"{'compile s':>9}")
    seen = set()
    for label, run in workloads().items():
        launches: list[Launch] = []
        with recording(launches):
            run()
        for launch in (v for recorded in launches for v in variants(recorded, tiles)):
            source, options = specialized(launch)
            key = source.hash() + str(options)
            if key in seen:
                continue
            seen.add(key)
            tile = ",".join(f"{k.removeprefix('BLOCK_')}={v}" for k, v in launch.kwargs.items() if k.startswith("BLOCK"))
            row = (f"{label:<24} {launch.module + '.' + launch.name:<28} {tile:<34} "
                   f"{','.join(f'{k}={v}' for k, v in options.items()) or 'default':<26}")
            start = time.perf_counter()
            try:
                compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)
            except Exception as e:  # noqa: BLE001 - a kernel that does not build is the finding
                print(f"{row} does not build: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
                continue
            seconds = time.perf_counter() - start
            use = resources(compiled.asm["cubin"])
            shared = compiled.metadata.shared + use.get("SHARED", 0)
            print(f"{row} {use.get('REG', -1):>4} {use.get('STACK', -1):>6} {shared / 1024:>7.0f} {seconds:>9.1f}",
                  flush=True)


if __name__ == "__main__":
    main()
