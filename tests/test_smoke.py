"""Every paper's notebook runs end to end at the smoke profile through the runner the pipeline uses, within
its budget, and writes a valid metrics.json - on seeds that no profile uses. A claim must hold for seeds
nobody tried, and a run on such seeds must finish: a failed gate is a verdict, not a crash. So the smoke
runs shift the profile's seeds by SEED_SHIFT (same number of seeds, same settings otherwise)."""

from __future__ import annotations

import json

import pytest

from conftest import papers_cli
from shared import paths
from shared.metrics import load_metrics
from shared.params import PROFILES, load_params_file, read_notebook_params, resolve
from shared.report import CPU_BUDGET_S

SMOKE_BUDGET_S = CPU_BUDGET_S["smoke"]
SEED_SHIFT = 31


def untried_seeds(slug: str) -> dict[str, list[int]]:
    """Every seed list of the smoke profile (``seeds`` and any ``*_seeds``) shifted by SEED_SHIFT; no shifted
    seed is one that any profile gives the same parameter."""
    specs = read_notebook_params(paths.notebook_path(slug))
    params = load_params_file(paths.repo_root() / "params.yaml")
    smoke = resolve(specs, params, slug, "smoke")
    shifted = {}
    for name in [k for k in smoke if k == "seeds" or k.endswith("_seeds")]:
        used = {s for profile in PROFILES for s in resolve(specs, params, slug, profile)[name]}
        shifted[name] = [s + SEED_SHIFT for s in smoke[name]]
        assert not used & set(shifted[name]), f"{slug}.{name}: {sorted(used & set(shifted[name]))} used by a profile"
    return shifted


@pytest.mark.slow
@pytest.mark.parametrize("slug", paths.list_papers())
def test_smoke_profile_runs_on_untried_seeds(slug, tmp_path):
    out = tmp_path / slug
    seeds = untried_seeds(slug)
    sets = [arg for name, values in seeds.items() for arg in ("--set", f"{name}={json.dumps(values)}")]
    res = papers_cli("run", slug, "--profile", "smoke", "--quiet", "--out", str(out), *sets)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = load_metrics(out / "metrics.json")
    assert metrics["paper"]["slug"] == slug and metrics["profile"] == "smoke"
    assert set(metrics["seeds"]) <= set().union(*seeds.values()), "the run used seeds it was not given"
    wall = json.loads((out / "runtime.json").read_text())["wall_time_s"]
    assert wall < SMOKE_BUDGET_S, f"{slug} smoke took {wall:.0f} s (budget {SMOKE_BUDGET_S} s)"
