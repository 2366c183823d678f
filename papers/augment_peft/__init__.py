"""Effectiveness of Data Augmentation for Parameter Efficient Tuning with Limited Data."""

TITLE = 'Effectiveness of Data Augmentation for Parameter Efficient Tuning with Limited Data'
URL = 'https://arxiv.org/abs/2303.02577'
GRADE = 'B'
CITATION = "TODO(papers new): authors. Effectiveness of Data Augmentation for Parameter Efficient Tuning with Limited Data. venue, year."
