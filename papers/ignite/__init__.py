"""Incorporating Surrogate Gradient Norm to Improve Offline Optimization Techniques (Dao, Nguyen, Truong, Hoang)."""

TITLE = "Incorporating Surrogate Gradient Norm to Improve Offline Optimization Techniques"
URL = "https://arxiv.org/abs/2503.04242"
GRADE = "B"
CITATION = (
    "M. C. Dao, P. L. Nguyen, T. N. Truong, T. N. Hoang. Incorporating Surrogate Gradient Norm to Improve "
    "Offline Optimization Techniques. NeurIPS 2024 (arXiv:2503.04242)."
)
