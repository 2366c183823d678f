"""papers.item_language_model: TODO(papers new): test the generators, losses and metrics against hand-computed cases."""

import pytest

from papers.item_language_model.method import sample_mean


def test_sample_mean_is_deterministic_and_close():
    assert sample_mean(0.5, 10_000, seed=1) == sample_mean(0.5, 10_000, seed=1)
    assert sample_mean(0.5, 10_000, seed=1) == pytest.approx(0.5, abs=0.05)
