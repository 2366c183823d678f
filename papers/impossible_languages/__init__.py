"""Mission: Impossible Language Models (Kallini, Papadimitriou, Futrell, Mahowald, Potts)."""

TITLE = "Mission: Impossible Language Models"
URL = "https://arxiv.org/abs/2401.06416"
GRADE = "B"
CITATION = (
    "J. Kallini, I. Papadimitriou, R. Futrell, K. Mahowald, C. Potts. Mission: Impossible Language Models. "
    "Proceedings of the 62nd Annual Meeting of the Association for Computational Linguistics (ACL 2024), "
    "pp. 14691-14714. arXiv:2401.06416."
)
