"""The Gauss-Markov Adjunction: Categorical Semantics of Residuals in Supervised Learning (Kamiura)."""

TITLE = "The Gauss-Markov Adjunction: Categorical Semantics of Residuals in Supervised Learning"
URL = "https://arxiv.org/abs/2507.02442"
GRADE = "D"
CITATION = (
    "M. Kamiura. The Gauss-Markov Adjunction: Categorical Semantics of Residuals in Supervised Learning. "
    "arXiv:2507.02442, 2025 (v3 retitled 'The Gauss-Markov Adjunction Provides Categorical Semantics of "
    "Residuals in Supervised Learning')."
)
