"""Shared utilities for the paper replications.

Kept deliberately light: importing ``shared`` imports neither torch nor matplotlib, so papers that
need no neural network (simulations, closed-form statistics) pay nothing for the ones that do.
Import the submodule you need: ``shared.stats``, ``shared.metrics``, ``shared.transformer`` ...
"""

__version__ = "0.1.0"
