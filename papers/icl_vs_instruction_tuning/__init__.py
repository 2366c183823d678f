"""The Inherent Limits of Pretrained LLMs: The Unexpected Convergence of Instruction Tuning and In-Context Learning Capabilities."""

TITLE = 'The Inherent Limits of Pretrained LLMs: The Unexpected Convergence of Instruction Tuning and In-Context Learning Capabilities'
URL = 'https://arxiv.org/abs/2501.08716'
GRADE = 'C'
CITATION = "Bigoulaeva, I., Tayyar Madabushi, H., Gurevych, I. The Inherent Limits of Pretrained LLMs: The Unexpected Convergence of Instruction Tuning and In-Context Learning Capabilities. arXiv:2501.08716, 2025."
