from pathlib import Path

from omegaconf import OmegaConf

from ssmbench.train import resume_from


def test_requeued_slurm_job_resumes_from_its_last_checkpoint(tmp_path, monkeypatch):
    cfg = OmegaConf.create({"ckpt_path": None})
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    assert resume_from(cfg, tmp_path) is None
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert resume_from(cfg, tmp_path) is None  # requeued before the first checkpoint: start afresh
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"")
    assert Path(resume_from(cfg, tmp_path)) == last
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    assert resume_from(cfg, tmp_path) is None
    assert resume_from(OmegaConf.create({"ckpt_path": "given.ckpt"}), tmp_path) == "given.ckpt"
