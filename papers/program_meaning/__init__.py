"""Emergent Representations of Program Semantics in Language Models Trained on Programs."""

TITLE = 'Emergent Representations of Program Semantics in Language Models Trained on Programs'
URL = 'https://arxiv.org/abs/2305.11169'
GRADE = 'A'
CITATION = "TODO(papers new): authors. Emergent Representations of Program Semantics in Language Models Trained on Programs. venue, year."
