"""Controllable Context Sensitivity and the Knob Behind It."""

TITLE = 'Controllable Context Sensitivity and the Knob Behind It'
URL = 'https://arxiv.org/abs/2411.07404'
GRADE = 'B'
CITATION = "TODO(papers new): authors. Controllable Context Sensitivity and the Knob Behind It. venue, year."
