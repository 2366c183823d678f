"""R-Tuning: Teaching Large Language Models to Refuse Unknown Questions (Zhang, Diao, Lin, Fung, Lian, Wang, Chen, Ji, Zhang)."""

TITLE = "R-Tuning: Teaching Large Language Models to Refuse Unknown Questions"
URL = "https://arxiv.org/abs/2311.09677"
GRADE = "B"
CITATION = (
    "H. Zhang, S. Diao, Y. Lin, Y. R. Fung, Q. Lian, X. Wang, Y. Chen, H. Ji, T. Zhang. R-Tuning: Instructing "
    "Large Language Models to Say 'I Don't Know'. NAACL 2024 (arXiv:2311.09677, first titled 'R-Tuning: "
    "Teaching Large Language Models to Refuse Unknown Questions')."
)
