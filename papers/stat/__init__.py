"""Skill-Targeted Adaptive Training."""

TITLE = 'Skill-Targeted Adaptive Training'
URL = 'https://arxiv.org/abs/2510.10023'
GRADE = 'C'
CITATION = "TODO(papers new): authors. Skill-Targeted Adaptive Training. venue, year."
