"""The installed package finds its configs: conf/ ships inside the wheel, and users add their own dirs."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, cli_env, run_cli


@pytest.mark.slow
def test_wheel_ships_conf_and_runs_from_any_directory(tmp_path):
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO_ROOT), "--no-deps", "--no-build-isolation", "-w", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = tmp_path.glob("ssmbench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "ssmbench/conf/config.yaml" in names and "ssmbench/conf/model/gru.yaml" in names
    assert "ssmbench/cli.py" in names

    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site), str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    env = cli_env()
    env["PYTHONPATH"] = str(site)  # the installed wheel only, not the source tree
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run([sys.executable, "-m", "ssmbench", "train", "--cfg", "job", "model=transformer"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ssmbench.models.transformer.AttentionMixer" in proc.stdout
    where = subprocess.run([sys.executable, "-c", "import ssmbench.config as c; print(c.config_dir())"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60)
    assert Path(where.stdout.strip()) == site / "ssmbench" / "conf"


def test_user_config_dir_adds_options(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "wide_gru.yaml").write_text(
        "defaults:\n  - gru\n  - _self_\nname: wide_gru\nd_model: 512\n"
    )
    proc = run_cli("train", "--config-dir", str(tmp_path), "model=wide_gru", "--cfg", "job", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "name: wide_gru" in proc.stdout and "d_model: 512" in proc.stdout
