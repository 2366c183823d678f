"""R-Tuning: Teaching Large Language Models to Refuse Unknown Questions."""

TITLE = 'R-Tuning: Teaching Large Language Models to Refuse Unknown Questions'
URL = 'https://arxiv.org/abs/2311.09677'
GRADE = 'B'
CITATION = "TODO(papers new): authors. R-Tuning: Teaching Large Language Models to Refuse Unknown Questions. venue, year."
