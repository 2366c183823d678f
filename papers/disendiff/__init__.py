"""Attention Calibration for Disentangled Text-to-Image Personalization (Zhang, Yang, Zhou, Wang; CVPR 2024)."""

TITLE = "Attention Calibration for Disentangled Text-to-Image Personalization"
URL = "https://arxiv.org/abs/2403.18551"
GRADE = "C"
CITATION = (
    "Y. Zhang, M. Yang, Q. Zhou, Z. Wang. Attention Calibration for Disentangled Text-to-Image "
    "Personalization. CVPR 2024 (arXiv:2403.18551)."
)
