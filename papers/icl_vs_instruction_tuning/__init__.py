"""The Inherent Limits of Pretrained LLMs: The Unexpected Convergence of Instruction Tuning and In-Context Learning Capabilities."""

TITLE = 'The Inherent Limits of Pretrained LLMs: The Unexpected Convergence of Instruction Tuning and In-Context Learning Capabilities'
URL = 'https://arxiv.org/abs/2501.08716'
GRADE = 'C'
CITATION = "TODO(papers new): authors. The Inherent Limits of Pretrained LLMs: The Unexpected Convergence of Instruction Tuning and In-Context Learning Capabilities. venue, year."
