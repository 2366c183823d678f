"""Skill-Targeted Adaptive Training."""

TITLE = 'Skill-Targeted Adaptive Training'
URL = 'https://arxiv.org/abs/2510.10023'
GRADE = 'C'
CITATION = "Yinghui He, Abhishek Panigrahi, Yong Lin, Sanjeev Arora. Skill-Targeted Adaptive Training. arXiv:2510.10023, 2025."
