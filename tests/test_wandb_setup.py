import pytest

from ssmbench.wandb_setup import wandb_mode, wandb_run_options


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for key in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    return tmp_path


def test_offline_without_a_key(clean_env):
    assert wandb_mode() == "offline"
    opts = wandb_run_options("s4", "copy", ["x"], "2026-01-01_00-00-00", "train")
    assert opts["offline"] is True and opts["tags"] == ["s4", "copy", "x"]
    assert opts["group"] == "2026-01-01_00-00-00" and opts["job_type"] == "train"


def test_online_with_env_key_or_netrc(clean_env, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert wandb_mode() == "online"
    assert "offline" not in wandb_run_options("a", "b", [], None, "train")
    monkeypatch.delenv("WANDB_API_KEY")
    (clean_env / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    (clean_env / ".netrc").chmod(0o600)
    assert wandb_mode() == "online"


def test_explicit_mode_wins(clean_env, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"
