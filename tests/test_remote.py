"""DVC remote: pipeline outputs pushed to a (temporary, local-directory) remote come back with `dvc pull`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MIRROR = os.environ.get("REPLICATIONS_DATA_MIRROR", "")


def _dvc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = str(Path(sys.executable).with_name("dvc"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    res = subprocess.run([exe, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"dvc {' '.join(args)}: {res.stdout}{res.stderr}"
    return res


def test_default_remote_is_a_local_directory_inside_the_checkout():
    config = (ROOT / ".dvc" / "config").read_text()
    assert "remote = local" in config and "url = ../.dvc-storage" in config
    ignored = subprocess.run(["git", "check-ignore", ".dvc-storage/x"], cwd=ROOT, capture_output=True, text=True)
    assert ignored.stdout.strip() == ".dvc-storage/x"


@pytest.mark.slow
@pytest.mark.skipif(not (MIRROR and Path(MIRROR, "scan").is_dir()), reason="needs the offline dataset mirror")
def test_push_and_pull_through_a_temporary_remote(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    remote = tmp_path / "remote"
    _dvc("remote", "add", "-d", "--local", "scratch", str(remote), cwd=clone)
    _dvc("repro", "data_scan", cwd=clone)
    original = {p.relative_to(clone): p.read_bytes() for p in (clone / "data" / "scan").rglob("*") if p.is_file()}
    assert len(original) == 7
    _dvc("push", "data_scan", cwd=clone)
    assert any(remote.rglob("*")), "nothing was pushed"
    shutil.rmtree(clone / "data" / "scan")
    shutil.rmtree(clone / ".dvc" / "cache")
    _dvc("pull", "data_scan", cwd=clone)
    restored = {p.relative_to(clone): p.read_bytes() for p in (clone / "data" / "scan").rglob("*") if p.is_file()}
    assert restored == original
    assert "up to date" in _dvc("status", "data_scan", cwd=clone).stdout
