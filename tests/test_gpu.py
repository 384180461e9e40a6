"""Every model on a CUDA device: the same outputs as on the CPU, finite under bf16 autocast, and a
`trainer=gpu` (bf16-mixed) fast_dev_run. Skipped where no CUDA device is present (CI)."""

import copy
import math

import pytest
import torch
from hydra.utils import instantiate

from ssmbench.build import build_lit, build_model, build_task, trainer_config
from ssmbench.config import config_groups
from tests.compose import composed

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
SMALL = ["task=copy", "task.seq_len=48", "task.n_copy=4", "task.n_train=64", "task.n_val=16", "task.n_test=16",
         "model.d_model=32", "model.n_layers=2", "task.batch_size=8"]


@pytest.fixture
def no_tf32():
    """Full float32 on the GPU (cuDNN's RNNs and convolutions default to TF32), for comparisons with the CPU."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("model", config_groups()["model"])
def test_model_on_cuda_matches_cpu_and_runs_in_bf16(model, tmp_path, no_tf32, monkeypatch):
    """The CPU reference is the torch path (SSMBENCH_KERNELS=torch: without TRITON_INTERPRET the kernels refuse CPU
    tensors); the GPU forward runs under the caller's SSMBENCH_KERNELS, so `SSMBENCH_KERNELS=triton pytest
    tests/test_gpu.py` checks every model's kernels on the GPU against the CPU torch path."""
    torch.manual_seed(0)
    with composed(f"model={model}", *SMALL, output_dir=tmp_path) as cfg:
        dm = build_task(cfg)
        net = build_model(cfg, dm).eval()
    x = next(iter(dm.train_dataloader()))[0]
    with torch.no_grad():
        with monkeypatch.context() as patch:
            patch.setenv("SSMBENCH_KERNELS", "torch")
            cpu = net(x)
        gpu_net = copy.deepcopy(net).cuda()
        gpu = gpu_net(x.cuda())
        torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-3)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            half = gpu_net(x.cuda()).float()
    assert torch.isfinite(half).all()
    assert (half - gpu).abs().max() <= 0.1 * gpu.abs().max() + 0.05


@pytest.mark.parametrize("model", config_groups()["model"])
def test_trainer_gpu_fast_dev_run(model, tmp_path):
    with composed(f"model={model}", *SMALL, "trainer=gpu", "+trainer.fast_dev_run=true",
                  output_dir=tmp_path) as cfg:
        dm = build_task(cfg)
        lit = build_lit(cfg, build_model(cfg, dm), dm)
        trainer = instantiate(trainer_config(cfg), logger=False, callbacks=[], enable_checkpointing=False,
                              enable_progress_bar=False)
        trainer.fit(lit, datamodule=dm)
        (result,) = trainer.test(lit, datamodule=dm, verbose=False)
    assert math.isfinite(result["test/loss"])
