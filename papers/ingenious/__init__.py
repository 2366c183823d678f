"""INGENIOUS: Using Informative Data Subsets for Efficient Pre-Training of Language Models."""

TITLE = 'INGENIOUS: Using Informative Data Subsets for Efficient Pre-Training of Language Models'
URL = 'https://arxiv.org/abs/2305.06677'
GRADE = 'B'
CITATION = ("Renduchintala, Killamsetty, Bhatia, Aggarwal, Ramakrishnan, Iyer, Krishnamurthy. INGENIOUS: Using "
            "Informative Data Subsets for Efficient Pre-Training of Language Models. Findings of EMNLP, 2023.")
