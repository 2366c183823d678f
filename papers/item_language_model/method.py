"""The paper's method, data generators and metrics as plain, tested functions.

TODO(papers new): replace the worked example below with the paper's science. Cite the equation or section each
function implements in its docstring. The claims are registered in claims.yaml (see docs/claims.md), not
here; this module measures what they need.
"""

from __future__ import annotations

import numpy as np

from shared.claims import Control, Gate
from shared.metrics import Measurement
from shared.stats import seed_measurement


def sample_mean(mu: float, n_samples: int, seed: int) -> float:
    """Mean of ``n_samples`` draws of N(mu, 1) from a generator seeded with ``seed``."""
    rng = np.random.default_rng(seed)
    return float(rng.normal(mu, 1.0, size=n_samples).mean())


def measure_example(estimates: list[float], control_estimates: list[float], n_samples: int,
                    tolerance: float) -> tuple[Measurement, Gate, Control]:
    """The example claim's statistic (estimates over seeds), its gate (the standard error 1/sqrt(n) is
    below half the tolerance, so the band can be resolved) and its control (estimates on data shifted by
    construction, which must fall outside the band)."""
    se = 1.0 / np.sqrt(n_samples)
    gate = Gate(passed=bool(se < tolerance / 2), value=float(se),
                detail=f"standard error {se:.4f} vs half the tolerance {tolerance / 2:g}")
    control = Control(seed_measurement(control_estimates, unit="estimate"), detail="N(mu + 0.5, 1) draws")
    return seed_measurement(estimates, unit="estimate"), gate, control
