"""Representational Homomorphism Predicts and Improves Compositional Generalization in Transformer Language Models."""

TITLE = 'Representational Homomorphism Predicts and Improves Compositional Generalization in Transformer Language Models'
URL = 'https://arxiv.org/abs/2601.18858'
GRADE = 'A'
CITATION = "TODO(papers new): authors. Representational Homomorphism Predicts and Improves Compositional Generalization in Transformer Language Models. venue, year."
