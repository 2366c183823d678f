"""Effectiveness of Data Augmentation for Parameter Efficient Tuning with Limited Data."""

TITLE = 'Effectiveness of Data Augmentation for Parameter Efficient Tuning with Limited Data'
URL = 'https://arxiv.org/abs/2303.02577'
GRADE = 'B'
CITATION = ("S. Obadinma, H. Guo, X. Zhu. Effectiveness of Data Augmentation for Parameter Efficient Tuning "
            "with Limited Data. Proceedings of the 8th Workshop on Representation Learning for NLP "
            "(RepL4NLP 2023), ACL, 2023.")
