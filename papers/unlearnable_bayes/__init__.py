"""Towards Provably Unlearnable Examples via Bayes Error Optimisation."""

TITLE = 'Towards Provably Unlearnable Examples via Bayes Error Optimisation'
URL = 'https://arxiv.org/abs/2511.08191'
GRADE = 'C'
CITATION = ("R. Zhang, J. Sun, E.-P. Lim, P. Zhang. Towards Provably Unlearnable Examples via Bayes Error "
            "Optimisation. AAAI 2026 (arXiv:2511.08191, 2025).")
