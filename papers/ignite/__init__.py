"""Incorporating Surrogate Gradient Norm to Improve Offline Optimization Techniques."""

TITLE = 'Incorporating Surrogate Gradient Norm to Improve Offline Optimization Techniques'
URL = 'https://arxiv.org/abs/2503.04242'
GRADE = 'B'
CITATION = "TODO(papers new): authors. Incorporating Surrogate Gradient Norm to Improve Offline Optimization Techniques. venue, year."
