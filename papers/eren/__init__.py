"""Robust and Scalable Model Editing for Large Language Models."""

TITLE = 'Robust and Scalable Model Editing for Large Language Models'
URL = 'https://arxiv.org/abs/2403.17431'
GRADE = 'B'
CITATION = "TODO(papers new): authors. Robust and Scalable Model Editing for Large Language Models. venue, year."
