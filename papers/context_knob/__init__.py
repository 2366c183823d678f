"""Controllable Context Sensitivity and the Knob Behind It (Minder, Du, Stoehr, Monea, Wendler, West, Cotterell)."""

TITLE = "Controllable Context Sensitivity and the Knob Behind It"
URL = "https://arxiv.org/abs/2411.07404"
GRADE = "B"
CITATION = (
    "J. Minder, K. Du, N. Stoehr, G. Monea, C. Wendler, R. West, R. Cotterell. Controllable Context Sensitivity "
    "and the Knob Behind It. ICLR 2025. arXiv:2411.07404."
)
