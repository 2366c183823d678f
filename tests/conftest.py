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
