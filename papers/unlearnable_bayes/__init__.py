"""Towards Provably Unlearnable Examples via Bayes Error Optimisation."""

TITLE = 'Towards Provably Unlearnable Examples via Bayes Error Optimisation'
URL = 'https://arxiv.org/abs/2511.08191'
GRADE = 'C'
CITATION = "TODO(papers new): authors. Towards Provably Unlearnable Examples via Bayes Error Optimisation. venue, year."
