"""Understanding In-Context Learning in Transformers and LLMs by Learning to Learn Discrete Functions."""

TITLE = 'Understanding In-Context Learning in Transformers and LLMs by Learning to Learn Discrete Functions'
URL = 'https://arxiv.org/abs/2310.03016'
GRADE = 'A'
CITATION = "TODO(papers new): authors. Understanding In-Context Learning in Transformers and LLMs by Learning to Learn Discrete Functions. venue, year."
