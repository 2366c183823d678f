"""Stationary Representations: Optimally Approximating Compatibility and Implications for Improved Model Replacements."""

TITLE = 'Stationary Representations: Optimally Approximating Compatibility and Implications for Improved Model Replacements'
URL = 'https://arxiv.org/abs/2405.02581'
GRADE = 'C'
CITATION = ("N. Biondi, F. Pernici, S. Ricci, A. Del Bimbo. Stationary Representations: Optimally Approximating "
            "Compatibility and Implications for Improved Model Replacements. CVPR 2024 (arXiv:2405.02581).")
