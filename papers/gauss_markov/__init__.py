"""The Gauss-Markov Adjunction: Categorical Semantics of Residuals in Supervised Learning."""

TITLE = 'The Gauss-Markov Adjunction: Categorical Semantics of Residuals in Supervised Learning'
URL = 'https://arxiv.org/abs/2507.02442'
GRADE = 'D'
CITATION = "TODO(papers new): authors. The Gauss-Markov Adjunction: Categorical Semantics of Residuals in Supervised Learning. venue, year."
