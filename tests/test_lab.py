"""JupyterLab: a paper's notebook source opens as a notebook, and saving it back does not change the file
(so exploring a notebook never makes its DVC stage stale)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "replication-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(port: int, path: str, method: str = "GET", body: dict | None = None) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"{}")


def _start_lab(root: Path, env: dict | None = None, *extra: str) -> tuple[int, subprocess.Popen]:
    port = _free_port()
    jupyter = str(Path(sys.executable).with_name("jupyter"))
    proc = subprocess.Popen([jupyter, "lab", "--no-browser", "--allow-root", f"--port={port}", "--ip=127.0.0.1",
                             f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return port, proc


def _wait_for(port: int, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while True:
        try:
            _api(port, "/api/status")
            return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


@pytest.mark.slow
def test_notebook_source_opens_and_round_trips_unchanged(tmp_path):
    work = tmp_path / "lab"
    (work / "nb").mkdir(parents=True)
    shutil.copy2(ROOT / "jupytext.toml", work / "jupytext.toml")
    source = ROOT / "papers" / "inverse_permutation" / "inverse_permutation.nb.py"
    shutil.copy2(source, work / "nb" / source.name)
    port, proc = _start_lab(work)
    try:
        _wait_for(port)
        model = _api(port, f"/api/contents/nb/{source.name}?type=notebook&content=1")
        assert model["type"] == "notebook"
        cells = model["content"]["cells"]
        tagged = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
        assert len(tagged) == 1 and "n_symbols: int = 16" in tagged[0]["source"]
        before = (work / "nb" / source.name).read_bytes()
        _api(port, f"/api/contents/nb/{source.name}", "PUT",
             {"type": "notebook", "format": "json", "content": model["content"]})
        assert (work / "nb" / source.name).read_bytes() == before
        assert (work / "nb" / "inverse_permutation.ipynb").exists()  # the paired, git-ignored notebook
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_make_lab_ships_the_viewer_and_kernel_settings_and_this_checkouts_path():
    """`make lab` installs the overrides (notebook viewer for Python files, kernel started without a
    dialog) and puts this checkout first on the kernel's PYTHONPATH."""
    overrides = json.loads((ROOT / "jupyter" / "overrides.json").read_text())
    assert overrides["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"]["python"] == "Jupytext Notebook"
    assert overrides["@jupyterlab/notebook-extension:tracker"]["autoStartDefaultKernel"] is True
    schemas = Path(sys.executable).parents[1] / "share" / "jupyter" / "lab" / "schemas" / "@jupyterlab"
    for plugin, key in (("docmanager-extension/plugin.json", "defaultViewers"),
                        ("notebook-extension/tracker.json", "autoStartDefaultKernel")):
        assert key in json.loads((schemas / plugin).read_text())["properties"], f"{plugin} has no {key}"
    dry = subprocess.run(["make", "-n", "lab"], cwd=ROOT, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    assert "overrides.json" in dry.stdout and f"PYTHONPATH={ROOT}" in dry.stdout


@pytest.mark.slow
def test_lab_serves_the_overrides_and_the_kernel_imports_this_checkout(tmp_path):
    """The settings Lab serves include the overrides, and a kernel started like `make lab` starts it
    imports `shared` from this checkout."""
    settings = tmp_path / "app" / "settings"
    settings.mkdir(parents=True)
    shutil.copy2(ROOT / "jupyter" / "overrides.json", settings / "overrides.json")
    env = {**__import__("os").environ, "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "user"), "PYTHONPATH": str(ROOT)}
    port, proc = _start_lab(tmp_path, env, f"--LabApp.app_settings_dir={settings}")
    try:
        _wait_for(port)
        viewer = _api(port, "/lab/api/settings/@jupyterlab/docmanager-extension:plugin")
        # overrides become the schema's defaults (the user has set nothing)
        assert viewer["schema"]["properties"]["defaultViewers"]["default"]["python"] == "Jupytext Notebook"
        tracker = _api(port, "/lab/api/settings/@jupyterlab/notebook-extension:tracker")
        assert tracker["schema"]["properties"]["autoStartDefaultKernel"]["default"] is True
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    probe = subprocess.run([sys.executable, "-c", "import shared; print(shared.__file__)"], cwd=tmp_path,
                           env={**env}, capture_output=True, text=True)
    assert probe.stdout.strip().startswith(str(ROOT))
