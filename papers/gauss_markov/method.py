"""The linear algebra under the Gauss-Markov adjunction (Kamiura 2025), checked in floating point with
tolerances derived from rounding-error bounds. The claims are registered in ``claims.yaml``.

The paper's construction (Sec. 3, v1): a category **Prm** of parameter vectors a in R^m whose morphisms are
translations ``+delta_a``, a category **Data** of data vectors y in R^n whose morphisms are translations
``+delta_y``; a functor F : Prm -> Data applying the model (a |-> Xa, so the translation +delta_a goes to
+X delta_a) and the Gauss-Markov functor G : Data -> Prm, y |-> X^+ y with the left Moore-Penrose
pseudo-inverse X^+ = (X^T X)^{-1} X^T, which is right adjoint to F. A residual y - Xa is the morphism
F(a) -> y of Data; under the adjunction it corresponds to the morphism a -> G(y) of Prm, the parameter
variation X^+ y - a = X^+ (y - Xa). The unit a -> GF(a) is the identity (X^+ X = I), the counit
FG(y) -> y is the minimum residual r* = (I - X X^+) y, the triangle identity G(counit) = id says
X^+ r* = 0 (the normal equations), and the OLS estimator G(y) and the minimum residual are related by G
preserving limits. That the pair is an adjunction is a *proof*; no computation can confirm or refute it.
What can be computed is the linear algebra the proof rests on, and that is what this module checks:

- ``functoriality``: F(a + delta) = F(a) + X delta and F(delta1 + delta2) = F(delta1) + F(delta2);
- ``variation_correspondence``: along gradient descent on 1/2 ||y - Xa||^2, every residual increment is
  -X times the parameter increment (delta_r = -X delta_a, the paper's dual flow of variations);
- ``unit_counit``: X^+ X = I; X^+ (y - Xa) = X^+ y - a; X^T r* = 0; the Pythagorean split
  ||y - Xa||^2 = ||X(a - G y)||^2 + ||r*||^2 (the residual splits into a parameter variation and the counit);
  and G(y) equals scikit-learn's least-squares fit;
- ``limit_preservation``: the gradient-descent iterates a_t converge to G(y) and the residuals r_t to r* at
  the rate (1 - mu/L)^t down to a rounding floor.

Every check returns error / bound ratios; a ratio <= 1 means the identity holds to within what floating
point allows. Bounds use the standard model fl(x op y) = (x op y)(1 + d), |d| <= u = 2^-53 and
gamma_k = k u / (1 - k u) (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., 2002, Ch. 2-3):
a matrix-vector product with inner dimension k satisfies |fl(Xv) - Xv| <= gamma_k |X| |v| componentwise
whatever the order of summation (so also for BLAS with FMA). Bounds that involve a least-squares solve
use Householder-QR backward stability (Higham Thms 19.4, 20.3: backward error gamma~_{mn} = c m n u /
(1 - c m n u), small constant c taken as 1) and the perturbation theory of least squares (Higham Thm 20.1,
Wedin), so they scale with the condition number kappa_2(X).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import solve_triangular

U = np.finfo(np.float64).eps / 2  # unit roundoff 2^-53


def gamma(k: int | float) -> float:
    """gamma_k = k u / (1 - k u) (Higham 2002, Lemma 3.1); needs k u < 1."""
    if k * U >= 1:
        raise ValueError(f"gamma_k undefined for k = {k}")
    return k * U / (1 - k * U)


RIDGE_CONTROL = "ridge_control"  # the biased estimator of the Gauss-Markov check's control


# --- designs ---------------------------------------------------------------------------------------------

@dataclass
class Design:
    """One regression problem: X (n, m) with an intercept column, y (n,)."""

    name: str
    X: np.ndarray
    y: np.ndarray

    @property
    def condition(self) -> float:
        s = np.linalg.svd(self.X, compute_uv=False)
        return float(s[0] / s[-1])


def real_design(name: str) -> Design:
    """A regression dataset shipped inside scikit-learn (no download), with an intercept column scaled to
    unit norm (1/sqrt(n) per row: the intercept parameter is then sqrt(n) times the usual one, which keeps
    kappa_2(X) small enough for gradient descent to converge in the budget; the fit is the same).

    ``diabetes``: n = 442, 10 standardised features, disease progression; ``linnerud``: n = 20, 3 exercise
    counts, body weight (the first physiological target)."""
    from sklearn.datasets import load_diabetes, load_linnerud

    if name == "diabetes":
        X, y = load_diabetes(return_X_y=True)
    elif name == "linnerud":
        X, Y = load_linnerud(return_X_y=True)
        y = Y[:, 0]
    else:
        raise ValueError(f"unknown dataset {name!r}; choose diabetes or linnerud")
    n = len(y)
    X = np.column_stack([np.full(n, 1 / np.sqrt(n)), X]).astype(np.float64)
    return Design(name, X, np.asarray(y, dtype=np.float64))


def synthetic_design(n: int, m: int, condition: float, rng: np.random.Generator) -> Design:
    """A random design with a prescribed condition number: X = Q_1 diag(s) Q_2^T with Q_1 (n, m) orthonormal
    (its first column the constant vector 1/sqrt(n), so the column space contains an intercept), Q_2 a random
    orthogonal (m, m) matrix and singular values s geometric from sqrt(n) to sqrt(n) / condition;
    y = X beta + N(0, I) noise with beta ~ N(0, I)."""
    g = rng.standard_normal((n, m))
    g[:, 0] = 1.0
    q1, _ = np.linalg.qr(g)  # first column spans the constant vector
    q2, _ = np.linalg.qr(rng.standard_normal((m, m)))
    s = np.sqrt(n) * np.geomspace(1.0, 1.0 / condition, m)
    X = (q1 * s) @ q2.T
    beta = rng.standard_normal(m)
    y = X @ beta + rng.standard_normal(n)
    return Design(f"synthetic_k{condition:g}", X, y)


# --- the two functors ------------------------------------------------------------------------------------

def forward_functor(X: np.ndarray, a: np.ndarray) -> np.ndarray:
    """F on objects: a |-> X a (the model's prediction); on morphisms +delta |-> +X delta."""
    return X @ a


@dataclass
class GaussMarkovFunctor:
    """G : Data -> Prm, y |-> X^+ y, computed by Householder QR (X = QR, X^+ = R^{-1} Q^T), the
    backward-stable textbook method whose error bounds are Higham's Thms 19.4 and 20.3."""

    X: np.ndarray
    Q: np.ndarray
    R: np.ndarray

    @classmethod
    def of(cls, X: np.ndarray) -> "GaussMarkovFunctor":
        if X.shape[0] < X.shape[1]:
            raise ValueError(f"X must have at least as many rows as columns; got {X.shape}")
        s = np.linalg.svd(X, compute_uv=False)
        if s[-1] <= max(X.shape) * 2 * U * s[0]:  # numpy.linalg.matrix_rank's default tolerance
            raise ValueError("X is numerically rank deficient: the left pseudo-inverse does not exist")
        Q, R = np.linalg.qr(X)
        return cls(X, Q, R)

    def __call__(self, y: np.ndarray) -> np.ndarray:
        """X^+ y for y of shape (n,) or (n, k)."""
        return solve_triangular(self.R, self.Q.T @ y)

    def pinv(self) -> np.ndarray:
        return solve_triangular(self.R, self.Q.T)


# --- bounds shared by the checks -----------------------------------------------------------------------

@dataclass
class LSBounds:
    """Normwise quantities of one least-squares problem (2-norms)."""

    norm_X: float  # ||X||_2
    kappa: float  # kappa_2(X)
    backward: float  # normwise backward error eps of the QR solve, relative to ||X||_2 (and ||y||)

    @classmethod
    def of(cls, X: np.ndarray) -> "LSBounds":
        """eps = gamma_{mn} (sqrt(m) + sqrt(n)) + gamma_m sqrt(m), to first order the relative 2-norm size of
        the perturbations that make the computed solve exact: Householder QR is exact for X + dX with
        ||dX e_j|| <= gamma~_{mn} ||X e_j|| (Higham Thm 19.4), so ||dX||_2 <= gamma_{mn} sqrt(m) ||X||_2; the
        explicitly formed Q is within ||Q_hat - Q||_F <= sqrt(n) gamma~_{mn} of an orthonormal matrix (Higham
        Lemma 19.3), which perturbs Q^T y and Q^T X by at most that relative amount; the triangular solve is
        exact for R + dR with |dR| <= gamma_m |R| (Higham Thm 8.5), ||dR||_2 <= gamma_m sqrt(m) ||R||_2."""
        n, m = X.shape
        s = np.linalg.svd(X, compute_uv=False)
        eps = gamma(m * n) * (np.sqrt(m) + np.sqrt(n)) + gamma(m) * np.sqrt(m)
        return cls(float(s[0]), float(s[0] / s[-1]), float(eps))

    def forward_error(self, a_hat: np.ndarray, r_norm: float) -> float:
        """Bound on ||a_computed - a_exact||_2 (Higham Thm 20.1, Wedin):
        kappa eps / (1 - kappa eps) * (2 + (kappa + 1) ||r|| / (||X|| ||a||)) * ||a||."""
        ke = self.kappa * self.backward
        if ke >= 1:
            return float("inf")
        a_norm = float(np.linalg.norm(a_hat))
        return ke / (1 - ke) * (2 * a_norm + (self.kappa + 1) * r_norm / self.norm_X)


def residual_error_bound(X: np.ndarray, a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Componentwise bound on |fl(y - fl(Xa)) - (y - Xa)|: gamma_{m+1} (|y| + |X||a|)."""
    m = X.shape[1]
    return gamma(m + 1) * (np.abs(y) + np.abs(X) @ np.abs(a))


# --- checks: each returns the largest error / bound ratio -----------------------------------------------

def check_functoriality(X: np.ndarray, y: np.ndarray, n_pairs: int, rng: np.random.Generator) -> dict:
    """Object level: fl(y - X fl(a + d)) against fl(fl(y - Xa) - fl(Xd)) (F sends the translation +d at a to
    -X d on the residual), bound 2 gamma_{m+3} (|y| + |X|(|a| + |d|)). Morphism level (composition):
    fl(X fl(d1 + d2)) against fl(fl(X d1) + fl(X d2)), bound 2 gamma_{m+1} |X| (|d1| + |d2|). Parameters are
    drawn around the OLS solution at its scale. Shapes: columns are samples, (m, n_pairs)."""
    n, m = X.shape
    scale = np.linalg.norm(np.linalg.lstsq(X, y, rcond=None)[0]) / np.sqrt(m) + 1.0
    a, d1, d2 = (scale * rng.standard_normal((m, n_pairs)) for _ in range(3))
    Y = y[:, None]
    lhs = Y - X @ (a + d1)
    rhs = (Y - X @ a) - X @ d1
    bound = 2 * gamma(m + 3) * (np.abs(Y) + np.abs(X) @ (np.abs(a) + np.abs(d1)))
    obj = float(np.max(np.abs(lhs - rhs) / bound))
    comp_l = X @ (d1 + d2)
    comp_r = X @ d1 + X @ d2
    bound_c = 2 * gamma(m + 1) * (np.abs(X) @ (np.abs(d1) + np.abs(d2)))
    comp = float(np.max(np.abs(comp_l - comp_r) / bound_c))
    identity_exact = bool(np.all(X @ np.zeros(m) == 0.0))  # F(id) = id: the zero translation
    return {"functor_objects": obj, "functor_composition": comp, "functor_identity": 0.0 if identity_exact else np.inf}


def check_unit_counit(design: Design, n_points: int, rng: np.random.Generator) -> dict:
    """Unit, hom correspondence, counit triangle identity, Pythagorean split and agreement with scikit-learn.
    Returns the largest error / bound ratio of each, plus the quantities behind them."""
    from sklearn.linear_model import LinearRegression

    X, y = design.X, design.y
    n, m = X.shape
    G = GaussMarkovFunctor.of(X)
    ls = LSBounds.of(X)
    P = G.pinv()  # (m, n)
    a_hat = G(y)
    r_star = y - X @ a_hat  # the counit's translation FG(y) -> y, computed
    out: dict = {"kappa": ls.kappa}

    # unit: X^+ X = I. P = R^{-1} Q^T with X + dX = Q R (Q orthonormal up to the explicit-Q error): to first
    # order P X - I = R^{-1} (dQ^T Q R - Q^T dX) - R^{-1} dR R^{-1} ..., of norm <= eps kappa / (1 - eps kappa)
    # with eps as in LSBounds; plus the rounding of the product gamma_n |P||X| (Frobenius bounds 2-norm).
    # The first-order bound needs kappa eps < 1; beyond that (kappa ~ 1e10 at n = 2000) the unit and hom checks
    # have no bound and are not scored.
    ke = ls.backward * ls.kappa
    E = P @ X - np.eye(m)
    unit_bound = ke / (1 - ke) + gamma(n) * np.linalg.norm(np.abs(P) @ np.abs(X)) if ke < 1 else np.inf
    if ke < 1:
        out["unit"] = float(np.linalg.norm(E, 2) / unit_bound)

    # hom correspondence: X^+ (y - Xa) = X^+ y - a for random a (the residual morphism F(a) -> y corresponds
    # to the parameter variation a -> G(y)). Exactly, P(y - Xa) - (Py - a) = -(PX - I) a; computed, add the
    # rounding of P applied to the residual and of P y and the subtraction.
    scale = np.linalg.norm(a_hat) / np.sqrt(m) + 1.0
    A = a_hat[:, None] + scale * rng.standard_normal((m, n_points))
    Y = y[:, None]
    res = Y - X @ A
    lhs = P @ res
    rhs = (P @ y)[:, None] - A
    res_err = residual_error_bound(X, A, Y)  # (n, k)
    absP = np.abs(P)
    hom_bound = (unit_bound * np.linalg.norm(A, axis=0)  # ||(PX - I) a||_2 (normwise, used per component)
                 + np.linalg.norm(absP @ res_err + gamma(n) * absP @ np.abs(res)
                                  + gamma(n + 1) * (absP @ np.abs(Y)) + U * np.abs(A), axis=0))
    if ke < 1:
        out["hom_correspondence"] = float(np.max(np.linalg.norm(lhs - rhs, axis=0) / hom_bound))

    # counit / triangle identity: X^T r* = 0 (equivalently X^+ r* = 0). The computed a_hat solves the LS
    # problem for (X + dX, y + dy) exactly (||dX|| <= eps ||X||, ||dy|| <= eps ||y||), so to first order
    # ||X^T r|| <= eps ||X|| (||r|| + ||y|| + ||X|| ||a_hat||) * (1 + eps); add the rounding of r and X^T r.
    xtr = X.T @ r_star
    nX = ls.norm_X
    r_err = residual_error_bound(X, a_hat, y)
    counit_bound = (ls.backward * nX * (np.linalg.norm(r_star) + np.linalg.norm(y) + nX * np.linalg.norm(a_hat))
                    * (1 + ls.backward)
                    + np.linalg.norm(np.abs(X).T @ r_err + gamma(n) * np.abs(X).T @ np.abs(r_star)))
    out["counit_normal_equations"] = float(np.linalg.norm(xtr) / counit_bound)
    out["normal_equations_relative"] = float(np.linalg.norm(xtr) / (nX * np.linalg.norm(y)))

    # Pythagorean split: ||y - Xa||^2 = ||X(a - a_hat)||^2 + ||r*||^2 + 2 (a_hat - a)^T X^T r* exactly for the
    # computed a_hat; the cross term is bounded through the counit check, the three squared norms through
    # the rounding of the vectors (componentwise bounds e) and of the sums of squares (gamma_n).
    diff = a_hat[:, None] - A
    v1, v2 = res, X @ diff
    e1 = res_err
    e2 = gamma(m + 1) * (np.abs(X) @ np.abs(diff))
    e3 = r_err
    n1, n2, n3 = (np.sum(v1**2, axis=0), np.sum(v2**2, axis=0), float(np.sum(r_star**2)))
    gap = np.abs(n1 - n2 - n3)

    def sq_err(v_norm2, e):
        en = np.linalg.norm(e, axis=0)
        return gamma(n) * v_norm2 + (2 * np.sqrt(v_norm2) + en) * en

    cross = 2 * np.linalg.norm(diff, axis=0) * (np.linalg.norm(xtr) + counit_bound)
    pyth_bound = sq_err(n1, e1) + sq_err(n2, e2) + sq_err(n3, e3[:, None]) + cross
    out["pythagorean_split"] = float(np.max(gap / pyth_bound))
    out["min_residual_is_minimal"] = float(np.max(np.where(n1 + pyth_bound >= n3, 0.0, np.inf)))

    # G(y) = OLS estimator of scikit-learn (LAPACK gelsd through scipy): both solutions are within the
    # forward error bound of the exact one, so their difference is within twice that bound. scikit-learn
    # treats singular values below tol * sigma_max (tol = 1e-6) as zero, i.e. it returns a different
    # (truncated) solution when kappa_2(X) > 1e6; the comparison applies only where its rank_ is m.
    lr = LinearRegression(fit_intercept=False).fit(X, y)
    fwd = ls.forward_error(a_hat, float(np.linalg.norm(r_star)))
    if lr.rank_ == m and np.isfinite(fwd):
        out["ols_equals_sklearn"] = float(np.linalg.norm(a_hat - lr.coef_) / (2 * fwd))
        out["ols_relative_difference"] = float(np.linalg.norm(a_hat - lr.coef_) / np.linalg.norm(a_hat))
    return out


def gradient_descent(X: np.ndarray, y: np.ndarray, steps: int, a0: np.ndarray, record: np.ndarray) -> dict:
    """Full-batch gradient descent on 1/2 ||y - Xa||^2 with step 1/L, L = sigma_max(X)^2:
    r_t = y - X a_t (F applied to a_t, then the residual morphism), a_{t+1} = a_t + (1/L) X^T r_t.

    Along the way checks the variation correspondence delta_r_t = -X delta_a_t at every step against the
    componentwise bound gamma_{m+1} (2|y| + |X|(|a_t| + |a_{t+1}| + |delta_a|)) + gamma_1 |delta_r|, and
    accumulates the rounding floor of the iteration (max over t of the gradient's and the update's rounding
    bounds). Returns the iterates at the steps in ``record`` and the largest correspondence ratio.
    """
    n, m = X.shape
    s = np.linalg.svd(X, compute_uv=False)
    L, mu = float(s[0] ** 2), float(s[-1] ** 2)
    eta = 1.0 / L
    absX = np.abs(X)
    a = a0.copy()
    r = y - X @ a
    worst = 0.0
    grad_round, upd_round = 0.0, 0.0
    saved_a, saved_r = {}, {}
    rec = set(int(t) for t in record)
    if 0 in rec:
        saved_a[0], saved_r[0] = a.copy(), r.copy()
    for t in range(1, steps + 1):
        g = X.T @ r
        # rounding of the gradient: r's own error (gamma_{m+1}) and X^T r (gamma_n): gamma_{n+m+1} overall
        grad_round = max(grad_round, float(np.linalg.norm(
            gamma(n + m + 1) * (absX.T @ (np.abs(y) + absX @ np.abs(a))))))
        step = eta * g
        a_new = a + step
        upd_round = max(upd_round, float(np.linalg.norm(gamma(2) * (np.abs(a) + np.abs(step)))))
        r_new = y - X @ a_new
        da = a_new - a
        dr = r_new - r
        bound = (gamma(m + 1) * (2 * np.abs(y) + absX @ (np.abs(a) + np.abs(a_new) + np.abs(da)))
                 + gamma(1) * np.abs(dr))
        worst = max(worst, float(np.max(np.abs(dr + X @ da) / bound)))
        a, r = a_new, r_new
        if t in rec:
            saved_a[t], saved_r[t] = a.copy(), r.copy()
    # e_{t+1} = (I - eta X^T X) e_t + eta zeta_t + xi_t  =>  ||e_t|| <= rho^t ||e_0|| + (eta Z + Xi) / (1 - rho)
    rho = 1.0 - mu / L
    floor = (eta * grad_round + upd_round) * L / mu
    return {"a": saved_a, "r": saved_r, "rho": rho, "floor": floor, "L": L, "mu": mu,
            "correspondence": worst}


def check_limits(design: Design, steps: int, n_record: int, rng: np.random.Generator) -> dict:
    """Run gradient descent from a random start and compare ||a_t - G(y)|| and ||r_t - r*|| with
    rho^t ||a_0 - G(y)|| + floor (+ the solver's forward error, since G(y) itself is computed)."""
    X, y = design.X, design.y
    m = X.shape[1]
    G = GaussMarkovFunctor.of(X)
    ls = LSBounds.of(X)
    a_hat = G(y)
    r_star = y - X @ a_hat
    fwd = ls.forward_error(a_hat, float(np.linalg.norm(r_star)))
    a0 = a_hat + (np.linalg.norm(a_hat) / np.sqrt(m) + 1.0) * rng.standard_normal(m)
    record = np.unique(np.concatenate([[0], np.geomspace(1, steps, n_record).astype(int)]))
    gd = gradient_descent(X, y, steps, a0, record)
    e0 = float(np.linalg.norm(a0 - a_hat)) + fwd
    rows = []
    worst_a = worst_r = 0.0
    for t in sorted(gd["a"]):  # t = 0 satisfies the bound by construction; it is recorded, not scored
        err_a = float(np.linalg.norm(gd["a"][t] - a_hat))
        err_r = float(np.linalg.norm(gd["r"][t] - r_star))
        bound_a = gd["rho"] ** t * e0 + gd["floor"] + fwd
        # r_t - r* = -X (a_t - a*) + rounding of both residuals
        r_round = float(np.linalg.norm(residual_error_bound(X, gd["a"][t], y))
                        + np.linalg.norm(residual_error_bound(X, a_hat, y)))
        bound_r = ls.norm_X * bound_a + r_round
        if t > 0:
            worst_a, worst_r = max(worst_a, err_a / bound_a), max(worst_r, err_r / bound_r)
        rows.append({"step": t, "param_error": err_a, "param_bound": bound_a, "residual_error": err_r,
                     "normal_equations": float(np.linalg.norm(X.T @ gd["r"][t]))})
    floor_total = gd["floor"] + fwd
    reached = gd["rho"] ** steps * e0 <= floor_total
    return {"param_rate": worst_a, "residual_rate": worst_r, "correspondence": gd["correspondence"],
            "floor_reached": bool(reached), "final_param_error": rows[-1]["param_error"],
            "floor": floor_total, "rho": gd["rho"], "trajectory": rows}


def gauss_markov_variances(design: Design, n_draws: int, noise: float, rng: np.random.Generator) -> dict:
    """Monte-Carlo total variance (trace of the covariance over draws) of OLS and of two other linear unbiased
    estimators A y (A X = I): weighted LS with weights ~ U(0.5, 2) and LS on a random half of the rows; and
    of the control ``RIDGE_CONTROL``, ridge with lambda = sigma_min(X)^2 (linear, biased: A X != I);
    y = X beta + noise * N(0, I) with beta the OLS fit of the design's own y. Also the exact traces
    noise^2 tr(A A^T)."""
    X = design.X
    n, m = X.shape
    beta = GaussMarkovFunctor.of(X)(design.y)
    Y = (X @ beta)[:, None] + noise * rng.standard_normal((n, n_draws))
    estimators = {"ols": GaussMarkovFunctor.of(X).pinv()}
    sw = np.sqrt(rng.uniform(0.5, 2.0, n))  # weights w ~ U(0.5, 2); A = (W^1/2 X)^+ W^1/2 via QR, not normal eqs
    estimators["wls_random_weights"] = GaussMarkovFunctor.of(sw[:, None] * X).pinv() * sw
    for _ in range(100):  # a random half of the rows with full column rank
        rows = np.sort(rng.choice(n, size=max(m, n // 2), replace=False))
        if np.linalg.matrix_rank(X[rows]) == m:
            break
    half = np.zeros((m, n))
    half[:, rows] = GaussMarkovFunctor.of(X[rows]).pinv()
    estimators["ls_half_rows"] = half
    # the control: ridge with lambda = sigma_min(X)^2, linear but biased (outside the theorem's class)
    s = np.linalg.svd(X, compute_uv=False)
    lam = float(s[-1] ** 2)
    estimators[RIDGE_CONTROL] = np.linalg.solve(X.T @ X + lam * np.eye(m), X.T)
    out = {}
    for name, A in estimators.items():
        est = A @ Y  # (m, draws)
        out[name] = {"mc_total_variance": float(np.trace(np.cov(est))),
                     "exact_total_variance": float(noise**2 * np.sum(A * A)),
                     "unbiased": float(np.max(np.abs(A @ X - np.eye(m))))}
    return out


# --- one seed: every design, every check ---------------------------------------------------------------

CHECK_GROUPS = {
    "functoriality": ("functor_objects", "functor_composition", "functor_identity"),
    "variation_correspondence": ("gd_correspondence",),
    "unit_counit": ("unit", "hom_correspondence", "counit_normal_equations", "pythagorean_split",
                    "min_residual_is_minimal", "ols_equals_sklearn"),
    "limit_preservation": ("param_rate", "residual_rate"),
}


def designs_for_seed(seed: int, datasets: list[str], conditions: list[float], n: int, m: int) -> list[Design]:
    """The real datasets (fixed) and one synthetic design per condition number, drawn from the seed."""
    out = [real_design(name) for name in datasets]
    for i, c in enumerate(conditions):
        out.append(synthetic_design(n, m, c, np.random.default_rng([seed, 1, i])))
    return out


def run_seed(seed: int, datasets: list[str], conditions: list[float], n: int, m: int, n_pairs: int,
             gd_steps: int, gd_max_condition: float, n_record: int, mc_draws: int, noise: float):
    """All checks for one seed. Returns (ratios, trajectories, variances) as lists of dict rows."""
    ratios, traj, var = [], [], []
    for j, d in enumerate(designs_for_seed(seed, datasets, conditions, n, m)):
        rng = np.random.default_rng([seed, 2, j])
        kappa = d.condition
        base = {"seed": seed, "design": d.name, "kappa": kappa}
        checks = {**check_functoriality(d.X, d.y, n_pairs, rng), **check_unit_counit(d, n_pairs, rng)}
        if kappa <= gd_max_condition:
            lim = check_limits(d, gd_steps, n_record, rng)
            checks.update({"param_rate": lim["param_rate"], "residual_rate": lim["residual_rate"],
                           "gd_correspondence": lim["correspondence"]})
            traj += [{**base, **row, "floor": lim["floor"], "floor_reached": lim["floor_reached"]}
                     for row in lim["trajectory"]]
        for group, names in CHECK_GROUPS.items():
            for name in names:
                if name in checks:
                    ratios.append({**base, "group": group, "check": name, "ratio": checks[name]})
        for est, v in gauss_markov_variances(d, mc_draws, noise, rng).items():
            var.append({**base, "estimator": est, **v})
    return ratios, traj, var
