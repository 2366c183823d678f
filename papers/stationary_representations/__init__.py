"""Stationary Representations: Optimally Approximating Compatibility and Implications for Improved Model Replacements."""

TITLE = 'Stationary Representations: Optimally Approximating Compatibility and Implications for Improved Model Replacements'
URL = 'https://arxiv.org/abs/2405.02581'
GRADE = 'C'
CITATION = "TODO(papers new): authors. Stationary Representations: Optimally Approximating Compatibility and Implications for Improved Model Replacements. venue, year."
