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


@pytest.mark.slow
def test_notebook_source_opens_and_round_trips_unchanged(tmp_path):
    work = tmp_path / "lab"
    (work / "nb").mkdir(parents=True)
    shutil.copy2(ROOT / "jupytext.toml", work / "jupytext.toml")
    source = ROOT / "papers" / "inverse_permutation" / "inverse_permutation.nb.py"
    shutil.copy2(source, work / "nb" / source.name)
    port = _free_port()
    jupyter = str(Path(sys.executable).with_name("jupyter"))
    proc = subprocess.Popen([jupyter, "lab", "--no-browser", "--allow-root", f"--port={port}", "--ip=127.0.0.1",
                             f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={work}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:
            try:
                _api(port, "/api/status")
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
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
