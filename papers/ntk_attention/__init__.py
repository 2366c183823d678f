"""Toward Infinite-Long Prefix in Transformer."""

TITLE = 'Toward Infinite-Long Prefix in Transformer'
URL = 'https://arxiv.org/abs/2406.14036'
GRADE = 'B'
CITATION = "TODO(papers new): authors. Toward Infinite-Long Prefix in Transformer. venue, year."
