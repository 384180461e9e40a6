import subprocess
import sys

import pytest

from ssmbench.wandb_setup import wandb_mode, wandb_run_options


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for key in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
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


@pytest.mark.parametrize("mode", ["online", "shared"])
def test_forced_online_without_a_key_falls_back_to_offline_with_a_warning(clean_env, monkeypatch, caplog, mode):
    monkeypatch.setenv("WANDB_MODE", mode)
    (clean_env / ".netrc").write_text("machine example.org\n  login user\n  password " + "k" * 40 + "\n")
    with caplog.at_level("WARNING", logger="ssmbench.wandb_setup"):
        opts = wandb_run_options("s4", "copy", [], None, "train")
    assert opts["mode"] == "offline" and opts["offline"] is True
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert f"WANDB_MODE={mode}" in warning and "WANDB_API_KEY" in warning and "wandb login" in warning
    assert "\n" not in warning


def test_forced_online_with_a_key_stays_online(clean_env, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert wandb_mode() == "online" and not caplog.records
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    (clean_env / ".netrc").write_text("machine wandb.example.org\n  login user\n  password " + "k" * 40 + "\n")
    assert wandb_mode() == "online"  # a self-hosted server's key counts
    monkeypatch.delenv("WANDB_BASE_URL")
    assert wandb_mode() == "offline"  # ... but not for api.wandb.ai


def test_run_id_resumes_the_same_wandb_run(clean_env, tmp_path):
    from lightning.pytorch.loggers import WandbLogger

    opts = wandb_run_options("s4", "copy", [], None, "train", run_id="abc123")
    assert opts["id"] == "abc123" and opts["resume"] == "allow"
    assert WandbLogger(save_dir=str(tmp_path), project="ssmbench", **opts).version == "abc123"
    assert "id" not in wandb_run_options("s4", "copy", [], None, "train")
    assert "resume" not in wandb_run_options("s4", "copy", [], None, "train")


def test_online_without_a_key_never_waits_at_the_login_prompt(clean_env):
    """The real wandb.init through WandbLogger, stdin a pipe nobody writes to: a login prompt would wait (or fail)."""
    from tests.helpers import cli_env

    env = {k: v for k, v in cli_env().items() if k not in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL")}
    env.update(WANDB_MODE="online", HOME=str(clean_env), NETRC=str(clean_env / ".netrc"))
    code = ("from lightning.pytorch.loggers import WandbLogger\n"
            "from ssmbench.wandb_setup import wandb_run_options\n"
            "opts = wandb_run_options('s4', 'copy', [], None, 'train', run_id='run42')\n"
            "print(opts['mode'], flush=True)\n"
            f"logger = WandbLogger(save_dir={str(clean_env)!r}, project='ssmbench', **opts)\n"
            "print(logger.experiment.id, flush=True)\n"
            "import wandb; wandb.finish()\n")
    out_path, err_path = clean_env / "stdout.txt", clean_env / "stderr.txt"
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=out, stderr=err,
                                env=env, cwd=clean_env)
        try:
            returncode = proc.wait(timeout=120)  # stdin stays open: a prompt would wait for it
        finally:
            proc.kill()
            proc.wait()
            proc.stdin.close()
    out, err = out_path.read_text(), err_path.read_text()
    assert returncode == 0, err[-2000:]
    assert out.split() == ["offline", "run42"]
    assert "no wandb API key is configured" in err and "wandb login" in err
    assert list((clean_env / "wandb").glob("offline-run-*-run42"))
