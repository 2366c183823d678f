"""The Delta Learning Hypothesis: Preference Tuning on Weak Data can Yield Strong Gains."""

TITLE = 'The Delta Learning Hypothesis: Preference Tuning on Weak Data can Yield Strong Gains'
URL = 'https://arxiv.org/abs/2507.06187'
GRADE = 'B'
CITATION = "TODO(papers new): authors. The Delta Learning Hypothesis: Preference Tuning on Weak Data can Yield Strong Gains. venue, year."
