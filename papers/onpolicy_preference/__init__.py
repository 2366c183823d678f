"""Preference Fine-Tuning of LLMs Should Leverage Suboptimal, On-Policy Data."""

TITLE = 'Preference Fine-Tuning of LLMs Should Leverage Suboptimal, On-Policy Data'
URL = 'https://arxiv.org/abs/2404.14367'
GRADE = 'A'
CITATION = "TODO(papers new): authors. Preference Fine-Tuning of LLMs Should Leverage Suboptimal, On-Policy Data. venue, year."
