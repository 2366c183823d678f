"""HelpSteer2-Preference: Complementing Ratings with Preferences."""

TITLE = 'HelpSteer2-Preference: Complementing Ratings with Preferences'
URL = 'https://arxiv.org/abs/2410.01257'
GRADE = 'C'
CITATION = "TODO(papers new): authors. HelpSteer2-Preference: Complementing Ratings with Preferences. venue, year."
