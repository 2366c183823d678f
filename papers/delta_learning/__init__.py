"""The Delta Learning Hypothesis: Preference Tuning on Weak Data can Yield Strong Gains (Geng et al., COLM 2025)."""

TITLE = "The Delta Learning Hypothesis: Preference Tuning on Weak Data can Yield Strong Gains"
URL = "https://arxiv.org/abs/2507.06187"
GRADE = "B"
CITATION = (
    "S. Geng, H. Ivison, C.-L. Li, M. Sap, J. Li, R. Krishna, P. W. Koh. The Delta Learning Hypothesis: "
    "Preference Tuning on Weak Data can Yield Strong Gains. COLM 2025 (arXiv:2507.06187)."
)
