"""Scattered or Connected? An Optimized Parameter-efficient Tuning Approach for Information Retrieval."""

TITLE = 'Scattered or Connected? An Optimized Parameter-efficient Tuning Approach for Information Retrieval'
URL = 'https://arxiv.org/abs/2208.09847'
GRADE = 'C'
CITATION = ("Ma, X., Guo, J., Zhang, R., Fan, Y. and Cheng, X. Scattered or Connected? An Optimized "
            "Parameter-efficient Tuning Approach for Information Retrieval. Proceedings of the 31st ACM "
            "International Conference on Information and Knowledge Management (CIKM), 2022. arXiv:2208.09847.")
