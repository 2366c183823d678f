"""`papers plots`: the DVC plots page is self-contained (no external script), its scripts parse, every
declared series is in the page, and each chart renders offline."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import papers_cli

pytestmark = pytest.mark.slow


@pytest.fixture()
def dvc_repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "papers").mkdir(parents=True)
    (root / "params.yaml").write_text("profile: small\n")
    (root / "curves.csv").write_text("step,a,b,c\n0,1,2,3\n1,2,3,4\n2,2,4,8\n")
    (root / "dvc.yaml").write_text("stages:\n  make:\n    cmd: 'true'\n    outs:\n      - curves.csv:\n"
                                   "          cache: false\nplots:\n  - curves.csv:\n      x: step\n"
                                   "      y: [a, b, c]\n")
    dvc = str(Path(sys.executable).with_name("dvc"))
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=t@example.org", "-c", "user.name=t", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)
    return root


def test_plots_page_is_self_contained_and_renders(dvc_repo):
    res = papers_cli("plots", cwd=dvc_repo, env={"REPLICATIONS_ROOT": str(dvc_repo)})
    assert res.returncode == 0, res.stderr
    page = (dvc_repo / "dvc_plots" / "index.html").read_text()
    assert not re.search(r"<script[^>]*\bsrc\s*=", page), "a script is loaded from outside the page"
    assert not re.search(r"<link[^>]*href\s*=\s*[\"']https?:", page)
    assert "window.vegaEmbed=" in page and "vegaEmbed(" in page.rsplit("</head>", 1)[1]
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", page, re.S)
    if shutil.which("node"):
        for i, js in enumerate(scripts):  # every script parses as a classic script
            path = dvc_repo / f"s{i}.js"
            path.write_text(js)
            check = subprocess.run(["node", "--check", str(path)], capture_output=True, text=True)
            assert check.returncode == 0, check.stderr[:500]
    specs = [json.loads(m) for m in re.findall(r"var spec = (\{.*?\});\s*vegaEmbed", page, re.S)]
    assert specs, "no chart in the page"
    import vl_convert as vlc

    for spec in specs:
        svg = vlc.vegalite_to_svg(spec)
        assert "<svg" in svg
    fields = {row["field"] for spec in specs for row in spec["data"]["values"]}
    assert fields == {"a", "b", "c"}  # all three series, not only the last column

