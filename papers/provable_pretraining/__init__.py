"""On the Provable Advantage of Unsupervised Pretraining (Ge, Tang, Fan, Jin; ICLR 2024)."""

TITLE = "On the Provable Advantage of Unsupervised Pretraining"
URL = "https://arxiv.org/abs/2303.01566"
GRADE = "A"
CITATION = (
    "J. Ge, S. Tang, J. Fan, C. Jin. On the Provable Advantage of Unsupervised Pretraining. "
    "ICLR 2024 (spotlight). arXiv:2303.01566."
)
