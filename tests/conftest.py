"""Shared test fixtures.

Tests that execute notebooks or DVC are marked ``slow``; ``make test`` runs everything, ``make test-fast``
only the unit tests. ``REPLICATIONS_DATA_MIRROR`` points data-fetch stages at the offline mirror
(``../shared/datasets`` next to the checkout) when it is not already set.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MIRROR = ROOT.parent / "shared" / "datasets"
if "REPLICATIONS_DATA_MIRROR" not in os.environ and MIRROR.is_dir():
    os.environ["REPLICATIONS_DATA_MIRROR"] = str(MIRROR)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


def papers_cli(*args: str, cwd: Path = ROOT, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the ``papers`` console script of this environment."""
    exe = Path(sys.executable).with_name("papers")
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([str(exe), *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


TOY_REGISTRY = """claims:
  - id: gap
    kind: replication
    statement: The effect is positive.
    source: Sec. 1
    paper_value: "+5 pp"
    metric: effect, per seed
    unit: pp
    direction: greater
    null_value: 0
    smallest_effect: 0.01
    criterion: interval above 0.01
    gate: the toy model learned (always, here)
    control: an A/A comparison with zero effect
  - id: identity
    kind: check
    statement: One equals one.
    source: Eq. 1
    paper_value: proved
    metric: error
    unit: ""
    direction: within
    target: 0
    tolerance: 0.001
    criterion: interval inside +-0.001
    gate: "none: a check"
    control: "none: a check"
"""

TOY_NOTEBOOK = '''# %% tags=["parameters"]
profile: str = "small"  # runner
device: str = "auto"  # runner
output_dir: str = ""  # runner
progress: bool = True  # runner
effect: float = 0.05  # the toy effect | x > -1
sleep: float = 0.0  # seconds to wait first (tests of interrupted runs) | x >= 0

# %%
import time

time.sleep(sleep)
from shared.claims import Control, Gate, load_claims
from shared.metrics import Measurement, write_metrics
from shared.paths import resolve_output_dir

out = resolve_output_dir(output_dir, "toy")
claims = load_claims("toy")
if "gap" in claims:
    claims["gap"].evaluate(Measurement(effect, effect - 0.01, effect + 0.01, 3, "t"), gate=Gate(True, "ok"),
                           control=Control(Measurement(0.0, -0.01, 0.01, 3, "t"), "A/A"))
for cid, claim in claims.items():
    if claim.verdict is None:
        claim.evaluate(Measurement(0.0, 0.0, 0.0, 3, "exact"))
write_metrics(out, slug="toy", title="Toy", url="https://example.org", profile=profile, device="cpu",
              seeds=[0, 1, 2], claims=list(claims.values()), headline={}, params={"effect": effect, "sleep": sleep})
'''


def make_toy_repo(base: Path, git: bool = False, slug: str = "toy", notebook: str = TOY_NOTEBOOK,
                  params: str = "  effect: 0.05\n  sleep: 0.0\n") -> Path:
    """A minimal repository with one fast paper (default ``toy``: a registry and a notebook that evaluates
    it); ``notebook`` and ``params`` (the section's lines) replace the toy's."""
    root = base / "repo"
    paper = root / "papers" / slug
    paper.mkdir(parents=True)
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "params.yaml").write_text(f"profile: small\n{slug}:\n{params}")
    (root / "papers" / "__init__.py").write_text("")
    (paper / "__init__.py").write_text("")
    (paper / "claims.yaml").write_text(TOY_REGISTRY)
    (paper / f"{slug}.nb.py").write_text(notebook)
    if git:
        for args in (["init", "-q"], ["config", "user.email", "t@example.org"], ["config", "user.name", "t"]):
            subprocess.run(["git", *args], cwd=root, check=True)
    return root
