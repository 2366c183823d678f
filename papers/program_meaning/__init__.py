"""Emergent Representations of Program Semantics in Language Models Trained on Programs (Jin & Rinard)."""

TITLE = "Emergent Representations of Program Semantics in Language Models Trained on Programs"
URL = "https://arxiv.org/abs/2305.11169"
GRADE = "A"
CITATION = (
    "C. Jin, M. Rinard. Emergent Representations of Program Semantics in Language Models Trained on "
    "Programs. ICML 2024 (PMLR 235). arXiv:2305.11169 (v1: Evidence of Meaning in Language Models Trained "
    "on Programs, 2023)."
)
