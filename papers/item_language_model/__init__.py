"""Item-Language Model for Conversational Recommendation."""

TITLE = 'Item-Language Model for Conversational Recommendation'
URL = 'https://arxiv.org/abs/2406.02844'
GRADE = 'B'
CITATION = "TODO(papers new): authors. Item-Language Model for Conversational Recommendation. venue, year."
