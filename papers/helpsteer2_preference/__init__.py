"""HelpSteer2-Preference: Complementing Ratings with Preferences (Wang et al., ICLR 2025)."""

TITLE = 'HelpSteer2-Preference: Complementing Ratings with Preferences'
URL = 'https://arxiv.org/abs/2410.01257'
GRADE = 'C'
CITATION = (
    "Z. Wang, A. Bukharin, O. Delalleau, D. Egert, G. Shen, J. Zeng, O. Kuchaiev, Y. Dong. "
    "HelpSteer2-Preference: Complementing Ratings with Preferences. ICLR 2025 (arXiv:2410.01257)."
)
