"""`papers diff`: the claims whose verdict, value or interval changed, old -> new, and changed parameters."""

from __future__ import annotations

import subprocess

import pytest

from conftest import make_toy_repo, papers_cli
from shared.diff import diff_paper


def claim(cid, verdict, value, lo, hi, gate=True, criterion="c"):
    return {"id": cid, "verdict": verdict, "criterion": criterion,
            "measured": {"value": value, "ci_low": lo, "ci_high": hi},
            "gate": {"passed": gate}, "control": {"meets_criterion": False}}


def test_diff_paper_lists_each_kind_of_change():
    old = {"profile": "small", "params": {"steps": 2000, "lr": 0.01},
           "claims": [claim("a", "reproduced", 0.5, 0.4, 0.6), claim("b", "inconclusive", 0.1, -0.1, 0.3),
                      claim("gone", "passed", 1.0, 1.0, 1.0), claim("same", "passed", 1.0, 1.0, 1.0)]}
    new = {"profile": "small", "params": {"steps": 4000, "lr": 0.01},
           "claims": [claim("a", "inconclusive", 0.5, 0.2, 0.8, gate=False),
                      claim("b", "inconclusive", 0.1, -0.1, 0.3, criterion="new text"),
                      claim("same", "passed", 1.0, 1.0, 1.0), claim("added", "not_reproduced", -0.2, -0.3, -0.1)]}
    lines = diff_paper("p", old, new).lines
    assert lines == [
        "~ a: verdict reproduced -> inconclusive; 0.5 [0.4, 0.6] -> 0.5 [0.2, 0.8]; gate True -> False",
        "~ b: criterion text changed",
        "+ added: not_reproduced, -0.2 [-0.3, -0.1] (new claim)",
        "- gone: was passed, 1 [1, 1] (claim removed)",
        "param steps: 2000 -> 4000",
    ]
    assert diff_paper("p", old, old).lines == []
    assert diff_paper("p", None, new).lines[0] == "results added"


@pytest.mark.slow
def test_cli_diff_between_commit_and_workspace(tmp_path):
    root = make_toy_repo(tmp_path, git=True)
    env = {"REPLICATIONS_ROOT": str(root)}
    assert papers_cli("run", "toy", "--quiet", cwd=root, env=env).returncode == 0
    for args in (["add", "-A"], ["commit", "-qm", "results"]):
        subprocess.run(["git", *args], cwd=root, check=True)
    (root / "params.yaml").write_text("profile: small\ntoy:\n  effect: -0.5\n  sleep: 0.0\n")
    assert papers_cli("run", "toy", "--quiet", cwd=root, env=env).returncode == 0
    res = papers_cli("diff", cwd=root, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[:2] == ["papers diff HEAD -> workspace", "toy"]
    assert "~ gap: verdict reproduced -> not_reproduced; 0.05 [0.04, 0.06] -> -0.5 [-0.51, -0.49]" in res.stdout
    assert "param effect: 0.05 -> -0.5" in res.stdout
    bad = papers_cli("diff", "no-such-rev", cwd=root, env=env)
    assert bad.returncode == 2 and "unknown revision 'no-such-rev'" in bad.stderr
