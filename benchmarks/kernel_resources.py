"""Compile every Triton kernel of ssmbench.kernels for a GPU architecture with the installed triton, without a GPU,
and print what each needs per thread: registers, stack (spills), static and dynamic shared memory.

    .venv/bin/python benchmarks/kernel_resources.py [--arch 90] [--tiles]

Each kernel is compiled as its module launches it on CUDA (the module's CUDA tile and launch settings) at issue
17's shapes (N = 16 states for the selective scan, Dk = 128 and chunk 64 for the delta rule state pass), with
float32 pointers; --tiles also compiles the other tiles worth trying. What this shows without a GPU: that a
kernel builds for the architecture with this triton (a GPU machine may have another version: its image has
triton 3.6), and where a tile spills (STACK > 0) or needs more shared memory than a GPU has (H100: 227 KiB per
block). It times nothing: speed needs a GPU (benchmarks/gpu.py). Registers and stack are read from the cubin
with the cuobjdump bundled with triton.
"""

from __future__ import annotations

import argparse
import inspect
import re
import subprocess
import tempfile
import warnings
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from ssmbench.kernels import cauchy, delta_rule_state, linear_scan, selective_scan


def _selective_scan(block_t: int, block_d: int, block_n: int = 16):
    launch = {"num_warps": selective_scan._warps(block_t, block_d, block_n)}
    tile = dict(BLOCK_T=block_t, BLOCK_D=block_d, BLOCK_N=block_n)
    return [(selective_scan, "forward", dict(HAS_D=True, HAS_Z=True, HAS_H0=True, **tile), launch),
            (selective_scan, "backward", dict(HAS_D=True, HAS_Z=True, HAS_DHLAST=True, **tile), launch)]


def _linear_scan(block_t: int, block_d: int):
    tile = dict(BLOCK_T=block_t, BLOCK_D=block_d)
    return [(linear_scan, "forward", dict(HAS_H0=True, REVERSE=False, COMPLEX=complex_, **tile), {})
            for complex_ in (False, True)] + [
            (linear_scan, "backward", dict(HAS_H0=True, REVERSE=False, COMPLEX=complex_, A_PER_STEP=True, **tile), {})
            for complex_ in (False, True)]


def _delta_rule_state(block_v: int, launch: dict):
    consts = dict(HEADS=16, HAS_DECAY=True, BLOCK_C=64, BLOCK_K=128, BLOCK_V=block_v)
    return [(delta_rule_state, name, consts, launch) for name in ("forward", "backward")]


def _cauchy(block_l: int, block_n: int):
    return [(cauchy, name, dict(BLOCK_L=block_l, BLOCK_N=block_n), {})
            for name in ("forward", "grad_poles", "grad_nodes")]


def cases(tiles: bool) -> list[tuple]:
    """(module, kernel name, constexprs, launch options) of every kernel as launched on CUDA; more tiles with
    `tiles`."""
    found = (_linear_scan(*linear_scan.BLOCKS["cuda"]) + _selective_scan(*selective_scan.BLOCKS["cuda"])
             + _delta_rule_state(delta_rule_state.VALUE_BLOCK["cuda"], delta_rule_state.LAUNCH["cuda"])
             + _cauchy(*cauchy.BLOCKS["cuda"]))
    if tiles:
        found += (_selective_scan(8, 16) + _selective_scan(16, 32) + _selective_scan(32, 16)
                  + _delta_rule_state(16, dict(num_warps=8, num_stages=2))
                  + _cauchy(64, 32) + _linear_scan(128, 32))
    return found


def signature(fn, consts: dict) -> dict:
    """The kernel's argument types: constexprs as given, *_ptr float32 pointers, *_rows int64 pointers (the row
    offset tables of the Cauchy kernels), every other argument a 32-bit integer."""
    def kind(name: str) -> str:
        if name in consts:
            return "constexpr"
        return "*fp32" if name.endswith("_ptr") else "*i64" if name.endswith("_rows") else "i32"

    return {name: kind(name) for name in inspect.signature(fn.fn).parameters}


def resources(cubin: bytes) -> dict[str, int]:
    """REG, STACK and SHARED (static) of the one function in a cubin, by cuobjdump --dump-resource-usage."""
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([str(tool), "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    return {key: int(value) for key, value in re.findall(r"\b(REG|STACK|SHARED):(\d+)", text)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90: H100 / H200)")
    parser.add_argument("--tiles", action="store_true", help="also the other tiles worth trying")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)  # triton's notices about its own defaults
    print(f"triton {triton.__version__}, sm_{args.arch}; per thread: registers, stack bytes (spills); per block: "
          f"shared KiB (dynamic, then static)")
    print(f"{'kernel':<17} {'part':<11} {'constexprs':<62} {'launch':<34} {'reg':>4} {'stack':>6} {'shared':>9}")
    for module, name, consts, launch in cases(args.tiles):
        fn = module._KERNELS[name, False]
        sig = signature(fn, consts)
        names = list(sig)
        shown = ",".join(f"{k}={v}" for k, v in consts.items() if k.startswith("BLOCK") or k in ("COMPLEX",))
        label = f"{module.__name__.rsplit('.', 1)[-1]:<17} {name:<11} {shown:<62} {str(launch or 'default'):<34}"
        try:
            kernel = triton.compile(ASTSource(fn=fn, signature=sig, constexprs={(names.index(k),): v
                                                                               for k, v in consts.items()}),
                                    target=GPUTarget("cuda", args.arch, 32), options=launch)
        except Exception as e:  # noqa: BLE001 - a kernel that does not build is the finding
            print(f"{label} does not build: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
            continue
        use = resources(kernel.asm["cubin"])
        print(f"{label} {use.get('REG', -1):>4} {use.get('STACK', -1):>6} "
              f"{kernel.metadata.shared / 1024:>5.0f}+{use.get('SHARED', 0) // 1024}")


if __name__ == "__main__":
    main()
