"""The factor-model instantiation (Ge et al. 2024, Sec. "factor models") with exact excess risks.

Data: ``x = B z + sigma * e`` with ``B`` (d x r) orthonormal, ``z ~ N(0, I_r)``, ``e ~ N(0, I_d)``; the
downstream label is ``y = <beta, z> + tau * eps`` (informative case) or ``y = <v, x> + tau * eps`` with ``v``
orthogonal to span(B) (the uninformative control: the label depends on x only outside the latent space).

Pretraining is maximum likelihood for probabilistic PCA (Tipping & Bishop 1999, closed form), and the
representation is the posterior mean ``E[z | x] = M^{-1} W^T (x - mu)`` with ``M = W^T W + sigma^2 I``: a linear
map of x, identifiable only up to a rotation, which the downstream OLS (a full linear map with intercept)
absorbs. Every predictor here is linear, ``f(x) = a^T x + c``; since (x, y) is jointly Gaussian with mean 0,

    R(f) - R* = (a - a*)^T Sigma_x (a - a*) + c^2,   a* = Sigma_x^{-1} Cov(x, y)

exactly, so excess risks are computed in closed form, with no test-set noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FactorModel:
    B: np.ndarray  # (d, r), orthonormal columns
    sigma: float  # noise scale of x
    tau: float  # noise scale of y
    beta: np.ndarray | None  # (r,) informative label weights, or None
    v: np.ndarray | None  # (d,) uninformative label weights (orthogonal to span(B)), or None

    @property
    def d(self) -> int:
        return self.B.shape[0]

    @property
    def r(self) -> int:
        return self.B.shape[1]

    @property
    def cov_x(self) -> np.ndarray:
        return self.B @ self.B.T + self.sigma**2 * np.eye(self.d)

    @property
    def cov_xy(self) -> np.ndarray:
        """Cov(x, y): ``B beta`` (informative) or ``Sigma_x v = sigma^2 v`` (v orthogonal to B)."""
        if self.beta is not None:
            return self.B @ self.beta
        return self.cov_x @ self.v

    @property
    def bayes_weights(self) -> np.ndarray:
        """a* = Sigma_x^{-1} Cov(x, y); E[y | x] = a*^T x because (x, y) is jointly Gaussian."""
        return np.linalg.solve(self.cov_x, self.cov_xy)

    def bayes_risk(self) -> float:
        """Var(y) - Cov(x, y)^T Sigma_x^{-1} Cov(x, y)."""
        if self.beta is not None:
            var_y = float(self.beta @ self.beta) + self.tau**2
        else:
            var_y = float(self.v @ self.cov_x @ self.v) + self.tau**2
        return var_y - float(self.cov_xy @ self.bayes_weights)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        z = rng.standard_normal((n, self.r))
        x = z @ self.B.T + self.sigma * rng.standard_normal((n, self.d))
        signal = z @ self.beta if self.beta is not None else x @ self.v
        return x, signal + self.tau * rng.standard_normal(n)

    def excess_risk(self, a: np.ndarray, c: float) -> float:
        """Exact ``R(a^T x + c) - R*`` (see the module docstring)."""
        diff = a - self.bayes_weights
        return float(diff @ self.cov_x @ diff + c**2)


def make_factor_model(d: int, r: int, rng: np.random.Generator, sigma: float = 1.0, tau: float = 0.5,
                      informative: bool = True) -> FactorModel:
    """A random instance: B from the QR of a Gaussian matrix; unit-norm beta (or v orthogonal to B)."""
    if not 1 <= r < d:
        raise ValueError(f"need 1 <= r < d, got r={r}, d={d}")
    q, _ = np.linalg.qr(rng.standard_normal((d, r + 1)))
    B, extra = q[:, :r], q[:, r]
    if informative:
        beta = rng.standard_normal(r)
        return FactorModel(B, sigma, tau, beta / np.linalg.norm(beta), None)
    return FactorModel(B, sigma, tau, None, extra)  # unit norm and orthogonal to span(B)


# --- pretraining: probabilistic PCA by maximum likelihood ------------------------------------------------

@dataclass(frozen=True)
class PPCA:
    mu: np.ndarray  # (d,)
    W: np.ndarray  # (d, r)
    sigma2: float

    def posterior_mean_map(self) -> tuple[np.ndarray, np.ndarray]:
        """(A, b) with ``E[z | x] = A x + b``: ``A = M^{-1} W^T``, ``b = -A mu``, ``M = W^T W + sigma^2 I``."""
        M = self.W.T @ self.W + self.sigma2 * np.eye(self.W.shape[1])
        A = np.linalg.solve(M, self.W.T)
        return A, -A @ self.mu


def subspace_sin(W: np.ndarray, B: np.ndarray) -> float:
    """Sine of the largest principal angle between span(W) and span(B) (B orthonormal): 0 = the learned
    representation spans the true latent subspace, 1 = it misses a direction entirely (also when W has
    lost rank, e.g. clipped columns)."""
    U, s, _ = np.linalg.svd(W, full_matrices=False)
    if s.size == 0 or s[-1] <= 1e-12 * max(s[0], 1e-300):
        return 1.0
    residual = U - B @ (B.T @ U)
    return float(min(1.0, np.linalg.norm(residual, 2)))


def ppca_from_moments(mu: np.ndarray, cov: np.ndarray, r: int) -> PPCA:
    """Closed-form PPCA maximum likelihood (Tipping & Bishop 1999, eqs. 7-8) from the sample mean and the
    (1/m) sample covariance, rotation R = I: ``sigma2 = mean of the d - r smallest eigenvalues``,
    ``W = U_r (Lambda_r - sigma2 I)^{1/2}`` (clipped at 0 when an eigenvalue falls below sigma2)."""
    evals, evecs = np.linalg.eigh(cov)  # ascending
    evals, evecs = evals[::-1], evecs[:, ::-1]
    sigma2 = float(evals[r:].mean())
    W = evecs[:, :r] * np.sqrt(np.clip(evals[:r] - sigma2, 0.0, None))
    return PPCA(mu, W, max(sigma2, 1e-12))


def fit_ppca(X: np.ndarray, r: int) -> PPCA:
    """PPCA maximum likelihood on the rows of X."""
    m, d = X.shape
    if m < 2 or r >= d:
        raise ValueError(f"PPCA needs at least 2 samples and r < d (m={m}, d={d}, r={r})")
    mu = X.mean(axis=0)
    return ppca_from_moments(mu, (X - mu).T @ (X - mu) / m, r)


def ols_with_intercept(F: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Least squares ``y ~ F g + c`` (minimum-norm when rank-deficient); returns (g, c)."""
    design = np.hstack([F, np.ones((F.shape[0], 1))])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return coef[:-1], float(coef[-1])


def pretrain_then_erm(X_lab: np.ndarray, y: np.ndarray, ppca: PPCA) -> tuple[np.ndarray, float]:
    """Downstream ERM (OLS with intercept) on the representation ``E[z | x]``; returns the composed linear
    predictor (a, c) in x-space: ``a = A^T g``, ``c = g^T b + c0``."""
    A, b = ppca.posterior_mean_map()
    g, c0 = ols_with_intercept(X_lab @ A.T + b, y)
    return A.T @ g, float(g @ b + c0)


def oracle_then_erm(X_lab: np.ndarray, y: np.ndarray, model: FactorModel) -> tuple[np.ndarray, float]:
    """The same downstream ERM on the representation computed with the TRUE latent model."""
    truth = PPCA(np.zeros(model.d), model.B, model.sigma**2)
    return pretrain_then_erm(X_lab, y, truth)


RIDGE_ALPHAS = np.logspace(-3, 4, 15)


def supervised_ridge(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Supervised baseline on raw x: ridge regression with intercept, alpha chosen by efficient
    leave-one-out CV over ``RIDGE_ALPHAS`` (scikit-learn RidgeCV)."""
    from sklearn.linear_model import RidgeCV

    reg = RidgeCV(alphas=RIDGE_ALPHAS, fit_intercept=True).fit(X, y)
    return reg.coef_, float(reg.intercept_)


def supervised_min_norm(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Supervised OLS on raw x with intercept; minimum-norm interpolation when n <= d."""
    return ols_with_intercept(X, y)
