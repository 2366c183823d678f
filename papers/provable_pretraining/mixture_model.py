"""The Gaussian-mixture instantiation (Ge et al. 2024, Sec. "Gaussian mixture models").

Data: ``x = mu_k + e`` with the cluster ``k`` uniform over K components, ``e ~ N(0, I_d)``; the label is a
fixed function of the cluster, ``y = 1[k in S]`` (half of the clusters). Pretraining is maximum likelihood for
the mixture (EM, scikit-learn ``GaussianMixture``, spherical covariances); the representation is the vector of
posterior cluster probabilities, identifiable only up to a permutation of the components, which the
downstream logistic regression absorbs.

The loss is the 0-1 error. The Bayes classifier thresholds the exact posterior
``P(y = 1 | x) = sum_{k in S} N(x; mu_k, I) / sum_k N(x; mu_k, I)``, and excess errors are measured on one large
test sample per seed shared by all methods (a paired comparison).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp


@dataclass(frozen=True)
class MixtureModel:
    means: np.ndarray  # (K, d)
    positive: np.ndarray  # (K,) bool: clusters labelled 1
    # the uninformative control: y = 1[<v, x> > 0] with v orthogonal to every mean, so that the label is
    # independent of the cluster and the posterior cluster probabilities carry no information about it
    label_direction: np.ndarray | None = None

    @property
    def K(self) -> int:
        return self.means.shape[0]

    @property
    def d(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x, y, _ = self.sample_with_components(n, rng)
        return x, y

    def sample_with_components(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, k): the inputs, the labels and the true component of each point."""
        k = rng.integers(0, self.K, size=n)
        x = self.means[k] + rng.standard_normal((n, self.d))
        if self.label_direction is not None:
            return x, (x @ self.label_direction > 0).astype(int), k
        return x, self.positive[k].astype(int), k

    def bayes_components(self, x: np.ndarray) -> np.ndarray:
        """The most probable component of each point under the true model (equal weights, identity covariance)."""
        return ((x[:, None, :] - self.means[None]) ** 2).sum(-1).argmin(1)

    def posterior_positive(self, x: np.ndarray) -> np.ndarray:
        """Exact P(y = 1 | x) under the true model (equal weights and identity covariances)."""
        logits = -0.5 * ((x[:, None, :] - self.means[None]) ** 2).sum(-1)  # (n, K)
        return np.exp(logsumexp(logits[:, self.positive], axis=1) - logsumexp(logits, axis=1))

    def bayes_predict(self, x: np.ndarray) -> np.ndarray:
        if self.label_direction is not None:
            return (x @ self.label_direction > 0).astype(int)
        return (self.posterior_positive(x) > 0.5).astype(int)


def make_mixture_model(d: int, K: int, separation: float, rng: np.random.Generator,
                       informative: bool = True) -> MixtureModel:
    """Means ``N(0, s^2 I)`` with ``s = separation / sqrt(2 d)``, so the expected distance between two means
    is about ``separation`` noise standard deviations; the first K // 2 clusters are labelled 1.

    ``informative=False`` (the control): the label is ``1[<v, x> > 0]`` with ``v`` a unit vector orthogonal
    to every mean (needs K < d), so it does not depend on the cluster at all."""
    if K < 2 or K % 2:
        raise ValueError(f"K must be an even number >= 2, got {K}")
    means = rng.standard_normal((K, d)) * separation / np.sqrt(2 * d)
    positive = np.zeros(K, dtype=bool)
    positive[: K // 2] = True
    if informative:
        return MixtureModel(means, positive)
    if K >= d:
        raise ValueError(f"the uninformative control needs K < d (got K={K}, d={d})")
    v = rng.standard_normal(d)
    q, _ = np.linalg.qr(means.T)  # orthonormal basis of the span of the means
    v -= q @ (q.T @ v)
    return MixtureModel(means, positive, v / np.linalg.norm(v))


def component_accuracy(predicted: np.ndarray, true: np.ndarray, K: int) -> float:
    """Fraction of points whose predicted component matches the true one under the best one-to-one
    relabelling of the predicted components (Hungarian matching): mixtures are identified up to a
    permutation."""
    from scipy.optimize import linear_sum_assignment

    confusion = np.zeros((K, K))
    np.add.at(confusion, (predicted, true), 1)
    rows, cols = linear_sum_assignment(-confusion)
    return float(confusion[rows, cols].sum() / len(true))


class ConstantClassifier:
    """What a classifier falls back to when its training labels have a single class."""

    def __init__(self, label: int):
        self.label = label

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.full(x.shape[0], self.label, dtype=int)


def _logistic(features: np.ndarray, y: np.ndarray, C: float):
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y)) < 2:
        return ConstantClassifier(int(y[0]))
    return LogisticRegression(C=C, max_iter=2000).fit(features, y)


def fit_mixture(X: np.ndarray, K: int, seed: int):
    """EM for a K-component spherical Gaussian mixture (maximum likelihood, 3 restarts)."""
    from sklearn.mixture import GaussianMixture

    return GaussianMixture(n_components=K, covariance_type="spherical", n_init=3, random_state=seed).fit(X)


class PretrainedClassifier:
    """Logistic regression on the posterior cluster probabilities of a fitted mixture."""

    def __init__(self, mixture, X_lab: np.ndarray, y: np.ndarray, C: float = 100.0):
        self.mixture = mixture
        self.head = _logistic(mixture.predict_proba(X_lab), y, C)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.head.predict(self.mixture.predict_proba(x))


def supervised_logistic(X_lab: np.ndarray, y: np.ndarray, C: float = 1.0):
    """Supervised baseline on raw x: L2-regularised logistic regression (scikit-learn defaults)."""
    return _logistic(X_lab, y, C)


def excess_error(clf, x_test: np.ndarray, y_bayes: np.ndarray, y_test: np.ndarray) -> float:
    """0-1 error of ``clf`` minus that of the Bayes classifier, on the same test points."""
    return float(np.mean(clf.predict(x_test) != y_test) - np.mean(y_bayes != y_test))
