"""Robust and Scalable Model Editing for Large Language Models (EREN; Chen et al., LREC-COLING 2024)."""

TITLE = "Robust and Scalable Model Editing for Large Language Models"
URL = "https://arxiv.org/abs/2403.17431"
GRADE = "B"
CITATION = (
    "Y. Chen, Z. Zhang, X. Han, C. Xiao, Z. Liu, C. Chen, K. Li, T. Yang, M. Sun. Robust and Scalable Model "
    "Editing for Large Language Models. LREC-COLING 2024. arXiv:2403.17431."
)
