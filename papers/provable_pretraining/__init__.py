"""On the Provable Advantage of Unsupervised Pretraining."""

TITLE = 'On the Provable Advantage of Unsupervised Pretraining'
URL = 'https://arxiv.org/abs/2303.01566'
GRADE = 'A'
CITATION = "TODO(papers new): authors. On the Provable Advantage of Unsupervised Pretraining. venue, year."
