"""Item-Language Model for Conversational Recommendation (Yang et al., 2024)."""

TITLE = "Item-Language Model for Conversational Recommendation"
URL = "https://arxiv.org/abs/2406.02844"
GRADE = "C"
CITATION = (
    "L. Yang, A. Subbiah, H. Patel, J. Y. Li, Y. Song, R. Mirghaderi, V. Aggarwal, Q. Wang. "
    "Item-Language Model for Conversational Recommendation. arXiv:2406.02844, 2024."
)
