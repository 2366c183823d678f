"""Preference Fine-Tuning of LLMs Should Leverage Suboptimal, On-Policy Data."""

TITLE = 'Preference Fine-Tuning of LLMs Should Leverage Suboptimal, On-Policy Data'
URL = 'https://arxiv.org/abs/2404.14367'
GRADE = 'A'
CITATION = ("F. Tajwar, A. Singh, A. Sharma, R. Rafailov, J. Schneider, T. Xie, S. Ermon, C. Finn, A. Kumar. "
            "Preference Fine-Tuning of LLMs Should Leverage Suboptimal, On-Policy Data. ICML 2024.")
