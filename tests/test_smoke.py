"""Every paper's notebook runs end to end at the smoke profile through the runner the pipeline uses,
within its budget, and writes a valid metrics.json."""

from __future__ import annotations

import json

import pytest

from conftest import papers_cli
from shared import paths
from shared.metrics import load_metrics
from shared.report import CPU_BUDGET_S

SMOKE_BUDGET_S = CPU_BUDGET_S["smoke"]


@pytest.mark.slow
@pytest.mark.parametrize("slug", paths.list_papers())
def test_smoke_profile_runs(slug, tmp_path):
    out = tmp_path / slug
    res = papers_cli("run", slug, "--profile", "smoke", "--quiet", "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = load_metrics(out / "metrics.json")
    assert metrics["paper"]["slug"] == slug and metrics["profile"] == "smoke"
    wall = json.loads((out / "runtime.json").read_text())["wall_time_s"]
    assert wall < SMOKE_BUDGET_S, f"{slug} smoke took {wall:.0f} s (budget {SMOKE_BUDGET_S} s)"
