"""Representational Homomorphism Predicts and Improves Compositional Generalization in Transformer Language
Models (An & Du, 2026)."""

TITLE = "Representational Homomorphism Predicts and Improves Compositional Generalization in Transformer Language Models"
URL = "https://arxiv.org/abs/2601.18858"
GRADE = "A"
CITATION = (
    "Z. An, W. Du. Representational Homomorphism Predicts and Improves Compositional Generalization in "
    "Transformer Language Model. arXiv:2601.18858, 2026 (earlier version: Representational Homomorphism "
    "Error Predicts Compositional Generalization in Language Models, NeurReps 2025)."
)
