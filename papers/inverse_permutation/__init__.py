"""The Impossibility of Inverse Permutation Learning in Transformer Models (Alur, Hays, Raghavan, Shah)."""

TITLE = "The Impossibility of Inverse Permutation Learning in Transformer Models"
URL = "https://arxiv.org/abs/2509.24125"
GRADE = "A"
CITATION = (
    "R. Alur, C. Hays, M. Raghavan, D. Shah. The Impossibility of Inverse Permutation Learning in "
    "Transformer Models. arXiv:2509.24125, 2025."
)
