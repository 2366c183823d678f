"""`papers new`: the scaffold is wired into params.yaml and dvc.yaml, runs at once, and fails the pipeline
checks only on its TODO markers until the paper's science is filled in."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import papers_cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def scratch_repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "papers").mkdir(parents=True)
    (root / "data").mkdir()
    for rel in ("README.md", "dvc.yaml", "params.yaml", "papers/__init__.py", "data/sources.yaml",
                "tests/conftest.py", "tests/test_pipeline.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, root / rel)
    shutil.copytree(ROOT / "shared", root / "shared", ignore=shutil.ignore_patterns("__pycache__"))
    return root


@pytest.mark.slow
def test_new_paper_runs_and_only_its_markers_fail_the_checks(scratch_repo):
    env = {"REPLICATIONS_ROOT": str(scratch_repo)}
    res = papers_cli("new", "demo_paper", "--title", "A Demo", "--url", "https://arxiv.org/abs/0000.00001",
                     cwd=scratch_repo, env=env)
    assert res.returncode == 0, res.stderr
    pdir = scratch_repo / "papers" / "demo_paper"
    assert {p.name for p in pdir.iterdir()} == {"__init__.py", "method.py", "claims.yaml", "demo_paper.nb.py",
                                                 "README.md", "paper.bib"}
    stage = yaml.safe_load((scratch_repo / "dvc.yaml").read_text())["stages"]["demo_paper"]
    assert "papers/demo_paper/method.py" in stage["deps"] and "shared/stats.py" in stage["deps"]
    assert "papers/demo_paper/claims.yaml" in stage["deps"]
    params = yaml.safe_load((scratch_repo / "params.yaml").read_text())
    assert params["demo_paper"]["profiles"]["smoke"]["n_samples"] == 100
    # params.yaml is appended to: every earlier byte stays as it was (no rewrapped lines)
    assert (scratch_repo / "params.yaml").read_text().startswith((ROOT / "params.yaml").read_text().rstrip("\n"))

    run = papers_cli("run", "demo_paper", "--profile", "smoke", "--quiet", "--out", "results/demo_paper",
                     cwd=scratch_repo, env=env)
    assert run.returncode == 0, run.stderr
    assert (scratch_repo / "results" / "demo_paper" / "metrics.json").exists()
    assert papers_cli("report", cwd=scratch_repo, env=env).returncode == 0

    pytest_env = {**os.environ, **env}
    check = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_pipeline.py",
             "-k", "demo_paper and not scaffold_markers"]
    ok = subprocess.run(check, cwd=scratch_repo, env=pytest_env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout[-3000:]
    markers = subprocess.run(check[:-1] + ["demo_paper and scaffold_markers"], cwd=scratch_repo,
                             env=pytest_env, capture_output=True, text=True)
    assert markers.returncode == 1 and "unfilled scaffold" in markers.stdout

    again = papers_cli("new", "demo_paper", "--title", "x", "--url", "https://x.org", cwd=scratch_repo, env=env)
    assert again.returncode != 0 and "already" in again.stderr


def test_new_rejects_bad_slugs_and_urls(scratch_repo):
    env = {"REPLICATIONS_ROOT": str(scratch_repo)}
    for slug in ("Bad-Slug", "class", "9lives"):
        res = papers_cli("new", slug, "--title", "t", "--url", "https://x.org", cwd=scratch_repo, env=env)
        assert res.returncode != 0 and "snake_case" in res.stderr
    res = papers_cli("new", "ok_slug", "--title", "t", "--url", "arxiv 1234", cwd=scratch_repo, env=env)
    assert res.returncode != 0 and "http" in res.stderr
    assert not (scratch_repo / "papers" / "ok_slug").exists()
