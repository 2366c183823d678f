"""The generated results tables: replication claims with gate, control and pre-registration; checks in
their own table; the tally line; smoke runs labelled as not meaningful."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import make_toy_repo, papers_cli

pytestmark = pytest.mark.slow  # executes the toy notebook


def _repo(tmp_path: Path) -> Path:
    root = make_toy_repo(tmp_path, git=True)
    (root / "README.md").write_text("# R\n<!-- results-table:begin -->\n<!-- results-table:end -->\n")
    (root / "papers" / "toy" / "README.md").write_text("# [Re] Toy\n<!-- results:begin -->\n<!-- results:end -->\n")
    for args in (["add", "-A"], ["commit", "-qm", "registry"]):
        subprocess.run(["git", *args], cwd=root, check=True)
    return root


def cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    res = papers_cli(*args, cwd=root, env={"REPLICATIONS_ROOT": str(root)})
    assert res.returncode == 0, res.stderr
    return res


def test_tables_split_checks_and_show_gate_control_prereg(tmp_path):
    root = _repo(tmp_path)
    cli(root, "run", "toy", "--quiet")
    cli(root, "report")
    top = (root / "README.md").read_text()
    assert "**1 replication claims: 1 reproduced, 0 not reproduced, 0 inconclusive; 1 checks: 1 passed, 0 failed.**" in top
    rep, chk = top.split("Checks (")
    gap_row = next(line for line in rep.splitlines() if "| gap (" in line)
    cells = [c.strip() for c in gap_row.split("|")]
    assert cells[5:11] == ["pp", "passed", "fails it", "reproduced", cells[9], "small"]
    assert cells[9].startswith("yes (")
    assert "papers/toy/README.md#claim-gap" in gap_row
    assert "| identity (" in chk and "identity" not in rep.split("Replication claims:")[1]
    paper = (root / "papers" / "toy" / "README.md").read_text()
    assert '<a id="claim-gap"></a>' in paper and "Control: an A/A comparison with zero effect ->" in paper
    summary = cli(root, "summary").stdout
    assert "1 replication claims: 1 reproduced" in summary
    assert cli(root, "report", "--check").returncode == 0


def test_failed_replication_is_titled_not_re(tmp_path):
    root = _repo(tmp_path)
    (root / "params.yaml").write_text("profile: small\ntoy:\n  effect: -0.5\n  sleep: 0.0\n")
    cli(root, "run", "toy", "--quiet")
    cli(root, "report")
    assert (root / "papers" / "toy" / "README.md").read_text().startswith("# [¬Re] Toy\n")
    (root / "params.yaml").write_text("profile: small\ntoy:\n  effect: 0.5\n  sleep: 0.0\n")
    cli(root, "run", "toy", "--quiet")
    cli(root, "report")
    assert (root / "papers" / "toy" / "README.md").read_text().startswith("# [Re] Toy\n")


def test_smoke_verdicts_are_labelled(tmp_path):
    root = _repo(tmp_path)
    cli(root, "run", "toy", "--quiet", "--profile", "smoke", "--out", "results/toy")
    cli(root, "report")
    assert "reproduced (smoke run: not meaningful)" in (root / "README.md").read_text()
    assert "(smoke run: verdicts not meaningful)" in cli(root, "summary").stdout


def _claim(low, high, gate=True, verdict="reproduced", kind="replication"):
    return {"kind": kind, "verdict": verdict, "rule": {"direction": "greater", "null_value": 0.0,
                                                       "smallest_effect": 0.1},
            "measured": {"value": None if low is None else (low + high) / 2, "ci_low": low, "ci_high": high},
            "gate": {"passed": gate}}


@pytest.mark.parametrize("low, high, gate, expected", [
    (0.2, 1.2, True, 0.1),  # 0.1 from the boundary 0.1, interval width 1.0
    (0.105, 0.605, True, 0.01),  # a close call
    (-0.9, 0.09, True, 0.01 / 0.99),  # a close call on the short side
    (0.105, 0.605, None, 0.01),  # no gate: the position still decides
    (0.105, 0.605, False, None),  # the failed gate decided, not the interval
    (None, None, True, None),
    (0.3, 0.3, True, None),  # no width
])
def test_relative_margin(low, high, gate, expected):
    from shared.report import relative_margin

    got = relative_margin(_claim(low, high, gate))
    assert got == pytest.approx(expected) if expected is not None else got is None


def test_close_calls_are_labelled_and_counted():
    from shared.report import margin_note, summary_line, verdict_label

    near, far = _claim(0.11, 0.61), _claim(0.3, 0.5, verdict="reproduced")
    assert verdict_label(near, "small") == "reproduced (close call)"
    assert verdict_label(far, "small") == "reproduced"
    assert "0.01000 from the rule's nearest boundary, 2% of its width; a close call" in margin_note(near)
    assert "from the rule's nearest boundary, 0.1% of its width" in margin_note(_claim(0.1005, 0.6005))
    assert margin_note(far) == " Margin: the interval is 0.2000 from the rule's nearest boundary, 100% of its width."
    assert margin_note(_claim(0.105, 0.605, gate=False)) == ""
    assert summary_line([near, far]).endswith("2 reproduced, 0 not reproduced, 0 inconclusive; 0 checks: "
                                              "0 passed, 0 failed; 1 close call")
    assert "close call" not in summary_line([far])


@pytest.mark.parametrize("wall,device,warned", [(30.0, "cpu", False), (75.0, "cpu", True), (75.0, "cuda", False)])
def test_papers_run_warns_over_budget(monkeypatch, capsys, tmp_path, wall, device, warned):
    """`papers run` names a CPU run over its profile's budget on stderr (and nothing otherwise)."""
    from shared import cli, runner

    result = runner.RunResult("gauss_markov", "smoke", tmp_path, wall, {"device": device, "claims": []})
    monkeypatch.setattr(runner, "run_paper", lambda *a, **k: result)
    assert cli.main(["run", "gauss_markov", "--profile", "smoke", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert ("WARNING: gauss_markov took 75 s, over the 60 s budget of `smoke`" in err) == warned
