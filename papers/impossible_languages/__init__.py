"""Mission: Impossible Language Models."""

TITLE = 'Mission: Impossible Language Models'
URL = 'https://arxiv.org/abs/2401.06416'
GRADE = 'B'
CITATION = "TODO(papers new): authors. Mission: Impossible Language Models. venue, year."
