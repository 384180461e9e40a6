"""benchmarks/kernel_resources.py: the launches it compiles are the ones core makes (recorded on meta tensors at
issue 17's shapes), specialized by triton's rule as the JIT would on a GPU; one of them compiles for sm_90 here
and its registers are read back from the cubin."""

import importlib
import sys
import warnings
from pathlib import Path

import pytest

pytest.importorskip("triton")
if not hasattr(importlib.import_module("triton._C.libtriton"), "native_specialize_impl"):
    pytest.skip("kernel_resources.py needs triton's native_specialize_impl (triton 3.6 and 3.9 have it)",
                allow_module_level=True)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import kernel_resources  # noqa: E402
from ssmbench import kernels  # noqa: E402
from ssmbench.kernels import delta_rule_state  # noqa: E402

EXPECTED = {  # workload -> (module, kernel) of every launch, in order: forward, then what backward needs
    "linear_scan float32": [("linear_scan", "forward"), ("linear_scan", "backward")],
    "linear_scan complex64": [("linear_scan", "forward"), ("linear_scan", "backward")],
    "selective_scan bfloat16": [("selective_scan", "forward"), ("selective_scan", "backward")],
    "gated delta rule": [("delta_rule_state", "forward"), ("delta_rule_state", "backward")],
    "delta rule": [("delta_rule_state", "forward"), ("delta_rule_state", "backward")],
    "S4 kernel": [("cauchy", "forward"), ("cauchy", "grad_poles")],  # S4's nodes z need no gradient
}


def recorded(label):
    launches = []
    with kernel_resources.recording(launches):
        kernel_resources.workloads()[label]()
    return launches


def test_every_workload_records_the_launches_core_makes_and_restores_the_dispatch():
    real_use, real_launch = kernels.use_kernel, delta_rule_state.launch
    for label, expected in EXPECTED.items():
        assert [(x.module, x.name) for x in recorded(label)] == expected, label
    assert kernels.use_kernel is real_use and delta_rule_state.launch is real_launch


def test_launches_are_specialized_as_the_jit_would():
    """The gated rule's forward state pass: core hands it float32 (B, H, N, C, Dk) tiles in its own layouts (K
    row-major, W column-major as the triangular solve writes it)."""
    launch = recorded("gated delta rule")[0]
    source, options = kernel_resources.specialized(launch)
    sig, names = source.signature, list(source.signature)
    assert options == {k: v for k, v in delta_rule_state.LAUNCH["cuda"].items()}
    assert sig["k_ptr"] == sig["starts_ptr"] == "*fp32"
    for unit in ("sk_k", "sw_c"):  # the unit strides become constants
        assert sig[unit] == "constexpr" and source.constants[(names.index(unit),)] == 1
    assert sig["sw_k"] == "i32" and source.attrs[(names.index("sw_k"),)] == [["tt.divisibility", 16]]  # 64
    assert source.constants[(names.index("BLOCK_K"),)] == 128 and source.constants[(names.index("HEADS"),)] == 16
    assert sig["sk_c"] == "i32" and source.attrs[(names.index("sk_c"),)] == [["tt.divisibility", 16]]  # 128
    assert (names.index("k_ptr"),) in source.attrs  # an aligned pointer


def test_tiles_replace_the_modules_tile_and_keep_its_other_settings():
    launch = recorded("delta rule")[0]
    variants = kernel_resources.variants(launch, tiles=True)
    assert variants[0] is launch and len(variants) == 1 + len(kernel_resources.TILES["delta_rule_state"])
    for variant, (consts, options) in zip(variants[1:], kernel_resources.TILES["delta_rule_state"]):
        assert variant.kwargs["BLOCK_V"] == consts["BLOCK_V"] and variant.kwargs["num_warps"] == options["num_warps"]
        assert variant.kwargs["num_stages"] == launch.kwargs["num_stages"] and variant.kwargs["HAS_DECAY"] is False


def test_a_recorded_launch_compiles_for_sm90_and_reports_its_registers():
    import triton
    from triton.backends.compiler import GPUTarget

    launch = recorded("S4 kernel")[0]
    source, options = kernel_resources.specialized(launch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)
    use = kernel_resources.resources(compiled.asm["cubin"])
    assert 16 <= use["REG"] <= 255 and use["STACK"] == 0
