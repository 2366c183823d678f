"""The paper's method, data generators and metrics as plain, tested functions.

TODO(papers new): replace the worked example below with the paper's science. Cite the equation or section each
function implements in its docstring.
"""

from __future__ import annotations

import numpy as np

from shared.metrics import Claim, Measurement
from shared.stats import seed_measurement

# Pre-registered claims: write them (statement, criterion, the paper's value) BEFORE the first run.
CLAIMS = {
    "example_claim": dict(
        statement="TODO(papers new): what the paper claims, in one sentence.",
        criterion="TODO(papers new): the rule that decides the verdict, e.g. the mean over seeds of the sample mean "
                  "of N(mu, 1) lies within 0.05 of mu.",
        paper_value="TODO(papers new): the paper's number and its setting",
    ),
}


def make_claims() -> list[Claim]:
    return [Claim(id=cid, **spec) for cid, spec in CLAIMS.items()]


def sample_mean(mu: float, n_samples: int, seed: int) -> float:
    """Mean of ``n_samples`` draws of N(mu, 1) from a generator seeded with ``seed``."""
    rng = np.random.default_rng(seed)
    return float(rng.normal(mu, 1.0, size=n_samples).mean())


def decide_example(claim: Claim, estimates: list[float], mu: float, tolerance: float = 0.05) -> Claim:
    m: Measurement = seed_measurement(estimates, unit="estimate")
    verdict = "reproduced" if abs(m.value - mu) <= tolerance else "not_reproduced"
    return claim.decide(m, verdict, f"mean estimate {m.value:.4f} vs mu = {mu} (tolerance {tolerance})")
