"""Understanding In-Context Learning in Transformers and LLMs by Learning to Learn Discrete Functions
(Bhattamishra, Patel, Blunsom, Kanade; ICLR 2024)."""

TITLE = "Understanding In-Context Learning in Transformers and LLMs by Learning to Learn Discrete Functions"
URL = "https://arxiv.org/abs/2310.03016"
GRADE = "A"
CITATION = (
    "S. Bhattamishra, A. Patel, P. Blunsom, V. Kanade. Understanding In-Context Learning in Transformers "
    "and LLMs by Learning to Learn Discrete Functions. ICLR 2024. arXiv:2310.03016."
)
