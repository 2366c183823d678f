"""Scattered or Connected? An Optimized Parameter-efficient Tuning Approach for Information Retrieval."""

TITLE = 'Scattered or Connected? An Optimized Parameter-efficient Tuning Approach for Information Retrieval'
URL = 'https://arxiv.org/abs/2208.09847'
GRADE = 'C'
CITATION = "TODO(papers new): authors. Scattered or Connected? An Optimized Parameter-efficient Tuning Approach for Information Retrieval. venue, year."
