"""`papers prereg` reads git: a claim is pre-registered only if its current text was committed strictly
before its first committed results (or, for results not committed yet, the run recorded a committed
registry). Each case is built as a real history in a minimal repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import TOY_REGISTRY, make_toy_repo, papers_cli

pytestmark = pytest.mark.slow  # each case executes the toy notebook


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


def commit(root: Path, message: str) -> str:
    git(root, "add", "-A")
    git(root, "commit", "-qm", message)
    return git(root, "rev-parse", "HEAD").strip()


def run_small(root: Path) -> None:
    res = papers_cli("run", "toy", "--quiet", cwd=root, env={"REPLICATIONS_ROOT": str(root)})
    assert res.returncode == 0, res.stderr


def statuses(root: Path) -> dict[str, str]:
    res = papers_cli("prereg", cwd=root, env={"REPLICATIONS_ROOT": str(root)})
    assert res.returncode == 0, res.stderr
    out = {}
    for line in res.stdout.splitlines()[2:]:
        parts = line.split()
        if len(parts) > 5 and parts[0] == "toy":
            out[parts[1]] = parts[5]
    return out


def test_registered_before_results_is_yes_and_stays_yes(tmp_path):
    root = make_toy_repo(tmp_path, git=True)
    reg = commit(root, "registry")
    assert statuses(root) == {"gap": "not", "identity": "not"}  # "not run"
    run_small(root)
    assert statuses(root) == {"gap": "yes", "identity": "yes"}  # from runtime.json's record
    commit(root, "results")
    assert statuses(root) == {"gap": "yes", "identity": "yes"}  # from history
    out = papers_cli("prereg", "toy", cwd=root, env={"REPLICATIONS_ROOT": str(root)}).stdout
    assert f"registered in {reg[:7]}, before the first results" in out


def test_registry_and_results_in_one_commit_is_no(tmp_path):
    root = make_toy_repo(tmp_path, git=True)
    run_small(root)  # the registry was not committed when the run started
    assert statuses(root)["gap"] == "uncommitted"
    commit(root, "claims and results together")
    assert statuses(root) == {"gap": "no", "identity": "no"}


def test_a_claim_changed_after_its_results_is_no(tmp_path):
    root = make_toy_repo(tmp_path, git=True)
    commit(root, "registry")
    run_small(root)
    commit(root, "results")
    registry = root / "papers" / "toy" / "claims.yaml"
    registry.write_text(TOY_REGISTRY.replace("smallest_effect: 0.01", "smallest_effect: 0.001"))
    assert statuses(root)["gap"] == "uncommitted"
    commit(root, "loosen the criterion after seeing results")
    assert statuses(root) == {"gap": "no", "identity": "yes"}

