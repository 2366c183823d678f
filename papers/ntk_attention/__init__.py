"""Toward Infinite-Long Prefix in Transformer."""

TITLE = 'Toward Infinite-Long Prefix in Transformer'
URL = 'https://arxiv.org/abs/2406.14036'
GRADE = 'B'
CITATION = "Yingyu Liang, Zhenmei Shi, Zhao Song, Chiwun Yang. Toward Infinite-Long Prefix in Transformer. arXiv:2406.14036, 2024."
