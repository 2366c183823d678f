"""INGENIOUS: Using Informative Data Subsets for Efficient Pre-Training of Language Models."""

TITLE = 'INGENIOUS: Using Informative Data Subsets for Efficient Pre-Training of Language Models'
URL = 'https://arxiv.org/abs/2305.06677'
GRADE = 'B'
CITATION = "TODO(papers new): authors. INGENIOUS: Using Informative Data Subsets for Efficient Pre-Training of Language Models. venue, year."
