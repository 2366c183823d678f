"""Attention Calibration for Disentangled Text-to-Image Personalization."""

TITLE = 'Attention Calibration for Disentangled Text-to-Image Personalization'
URL = 'https://arxiv.org/abs/2403.18551'
GRADE = 'D'
CITATION = "TODO(papers new): authors. Attention Calibration for Disentangled Text-to-Image Personalization. venue, year."
