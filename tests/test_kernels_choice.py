"""The config key `kernels` (conf/config.yaml): ssmbench.kernels.parse_choice / choose, and build_modules applying
it, so that `ssmbench train kernels=torch` and SSMBENCH_KERNELS=torch choose the same path. No triton needed."""

import pytest

from ssmbench import kernels
from ssmbench.build import build_modules
from tests.compose import composed


def test_null_leaves_the_environment_and_a_mode_sets_it(monkeypatch):
    monkeypatch.setenv("SSMBENCH_KERNELS", "torch")
    kernels.choose(None)
    assert kernels.mode() == "torch"
    kernels.choose(" Auto ")
    assert kernels.mode() == "auto"


def test_bad_choices_are_one_line_errors(monkeypatch):
    with pytest.raises(ValueError, match=r"^kernels='cuda' must be one of auto, torch, triton, or null"):
        kernels.parse_choice("cuda")
    monkeypatch.setattr(kernels, "triton_available", lambda: False)
    with pytest.raises(ValueError, match=r"kernels=triton but triton is not installed: pip install 'ssmbench\[kernels\]'"):
        kernels.parse_choice("triton")
    assert kernels.parse_choice("torch") == "torch"


def test_build_modules_applies_the_config_key(monkeypatch):
    monkeypatch.setenv("SSMBENCH_KERNELS", "auto")
    with composed("model=gru", "model.d_model=8", "model.n_layers=1", "task.n_train=8", "task.n_val=4",
                  "task.n_test=4", "kernels=torch") as cfg:
        build_modules(cfg)
    assert kernels.mode() == "torch"
