"""Aligning Language Models with Observational Data: Opportunities and Risks from a Causal Perspective."""

TITLE = 'Aligning Language Models with Observational Data: Opportunities and Risks from a Causal Perspective'
URL = 'https://arxiv.org/abs/2506.00152'
GRADE = 'B'
CITATION = ("Loghmani, E. Aligning Language Models with Observational Data: Opportunities and Risks from a "
            "Causal Perspective. arXiv:2506.00152, 2025.")
