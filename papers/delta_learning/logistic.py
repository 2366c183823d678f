"""Delta learning in logistic regression (paper Sec. 6): a student and two weaker teachers, DPO vs SFT.

Setting (our construction of the paper's Sec. 6 setting; see README for what we could and could not check):

- inputs ``x ~ N(0, I_d)``; the ground truth is the halfspace ``sign(<w*, x>)`` with ``||w*|| = 1``;
- every model is a logistic regression ``p_theta(y | x) = sigma(y <theta, x>)``, ``y in {-1, +1}``, written
  ``theta = kappa (cos(alpha) w* + sin(alpha) u)`` with ``u`` a unit *error direction* orthogonal to ``w*``.
  Its accuracy against the ground truth is exact for Gaussian inputs: ``acc(theta) = 1 - angle(theta, w*)/pi``
  (so no evaluation sample is needed);
- the student has the smallest angle: ``alpha_s < alpha_1 < alpha_2`` (student > teacher 1 > teacher 2);
- error directions share a fraction ``rho`` of a common direction: ``u_i = sqrt(rho) u_0 + sqrt(1 - rho) v_i``
  with ``w*, u_0, v_s, v_1, v_2`` orthonormal, so ``<u_i, u_j> = rho`` exactly. ``rho = 0`` is the generic
  high-dimensional case (independent errors); ``rho = 1`` puts all three models on one arc (one quality axis,
  as in the paper's bold-sections experiment);
- preference data: for each ``x`` the chosen response ``y_c ~ p_theta1(.|x)`` and the rejected one
  ``y_r ~ p_theta2(.|x)`` (both sampled, like responses from two weak LMs).

DPO with reference = initial student: the implicit reward of a label is ``log p_theta(y|x) - log p_ref(y|x)``;
for binary labels ``log p(+1|x) - log p(-1|x) = <theta, x>``, so on a pair with ``y_c != y_r`` the DPO logit is
``beta * y_c <theta - theta_ref, x>`` and ties (``y_c == y_r``) have a constant loss (log 2) and no gradient.
DPO on weak pairs is therefore logistic regression of ``y_c`` on the disagreement pairs, in the *update*
``Delta = theta - theta_ref``. On a disagreement pair ``P(y_c = +1 | x) = sigma(<theta_1 - theta_2, x>)``
(a two-line computation, tested), so the converged DPO update is ``Delta* = (theta_1 - theta_2) / beta``:
DPO adds the teachers' *delta* to the student, whatever the teachers' absolute quality. SFT on the chosen
responses is logistic regression of ``y_c`` on all ``x``, whose optimum is ``theta_1`` itself: SFT imitates the
weaker teacher.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


# --- geometry -------------------------------------------------------------------------------------------

def accuracy(theta: np.ndarray, w_star: np.ndarray) -> float:
    """Exact accuracy of ``sign(<theta, x>)`` against ``sign(<w*, x>)`` for ``x ~ N(0, I)``: 1 - angle / pi."""
    cos = float(theta @ w_star / (np.linalg.norm(theta) * np.linalg.norm(w_star)))
    return 1.0 - float(np.arccos(np.clip(cos, -1.0, 1.0))) / np.pi


def angle_for_accuracy(acc: float) -> float:
    """The angle to ``w*`` of a linear classifier with accuracy ``acc``: ``pi (1 - acc)``."""
    return float(np.pi * (1.0 - acc))


@dataclass(frozen=True)
class Geometry:
    w_star: np.ndarray  # (d,)
    student: np.ndarray  # (d,)
    teacher_1: np.ndarray  # (d,) the chosen (stronger) teacher
    teacher_2: np.ndarray  # (d,) the rejected (weaker) teacher


def make_geometry(d: int, acc_student: float, acc_teacher_1: float, acc_teacher_2: float, rho: float,
                  kappa: float, rng: np.random.Generator) -> Geometry:
    """Ground truth, student and two teachers with the given accuracies and shared-error fraction ``rho``.

    A random orthonormal frame ``(w*, u_0, v_s, v_1, v_2)`` (QR of a Gaussian d x 5 matrix) makes the
    construction rotation-invariant; every model has norm ``kappa`` (its sharpness).
    """
    if d < 5:
        raise ValueError("d must be >= 5 (five orthonormal directions)")
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"rho must be in [0, 1], got {rho}")
    q, _ = np.linalg.qr(rng.standard_normal((d, 5)))
    w_star, u0, vs, v1, v2 = q.T

    def model(acc: float, v: np.ndarray) -> np.ndarray:
        alpha = angle_for_accuracy(acc)
        u = np.sqrt(rho) * u0 + np.sqrt(1.0 - rho) * v
        return kappa * (np.cos(alpha) * w_star + np.sin(alpha) * u)

    return Geometry(w_star, model(acc_student, vs), model(acc_teacher_1, v1), model(acc_teacher_2, v2))


# --- data -----------------------------------------------------------------------------------------------

def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def sample_labels(theta: np.ndarray, x: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Responses ``y in {-1, +1}`` sampled from ``p_theta(y|x)`` with given U(0,1) draws (common random
    numbers let several configurations share one draw)."""
    return np.where(uniforms < sigmoid(x @ theta), 1.0, -1.0)


def sample_pairs(geom: Geometry, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` prompts ``x`` (n, d) with chosen labels from teacher 1 and rejected labels from teacher 2."""
    x = rng.standard_normal((n, geom.w_star.shape[0]))
    u = rng.random((n, 2))
    return x, sample_labels(geom.teacher_1, x, u[:, 0]), sample_labels(geom.teacher_2, x, u[:, 1])


# --- losses (paper Eq. for DPO with reference = initial student; SFT = NLL of the chosen response) -------

def dpo_loss(theta: np.ndarray, theta_ref: np.ndarray, x: np.ndarray, y_c: np.ndarray, y_r: np.ndarray,
             beta: float) -> float:
    """Mean DPO loss ``-log sigma(beta [(log p(y_c) - log p_ref(y_c)) - (log p(y_r) - log p_ref(y_r))])``."""
    def logp(th, y):
        return -np.logaddexp(0.0, -y * (x @ th))

    margin = beta * ((logp(theta, y_c) - logp(theta_ref, y_c)) - (logp(theta, y_r) - logp(theta_ref, y_r)))
    return float(np.mean(np.logaddexp(0.0, -margin)))


def sft_loss(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood ``-log sigma(y <theta, x>)``."""
    return float(np.mean(np.logaddexp(0.0, -y * (x @ theta))))


def logistic_fit(x: np.ndarray, y: np.ndarray, scale: float = 1.0, iters: int = 50, tol: float = 1e-10) -> np.ndarray:
    """Minimiser of ``mean log(1 + exp(-y scale <w, x>))`` (no intercept) by Newton's method.

    The problem is convex; with sampled (noisy) labels and n >> d the minimiser is finite and Newton
    converges in a handful of steps. Computed with torch in float64 so that the thread count follows
    ``torch.set_num_threads`` (a multi-threaded BLAS on a busy 2-core machine is ~50x slower here).
    """
    import torch

    xs = torch.as_tensor(scale * x, dtype=torch.float64)
    yt = torch.as_tensor(y, dtype=torch.float64)
    n, d = xs.shape
    w = torch.zeros(d, dtype=torch.float64)
    for _ in range(iters):
        p = torch.sigmoid(-yt * (xs @ w))  # d loss / d z = -y p
        grad = -(xs.T @ (yt * p)) / n
        h = (xs.T * (p * (1 - p))) @ xs / n
        step = torch.linalg.solve(h + 1e-12 * torch.eye(d, dtype=torch.float64), grad)
        w = w - step
        if float(step.abs().max()) < tol:
            break
    return w.numpy()


def dpo_converged(theta_ref: np.ndarray, x: np.ndarray, y_c: np.ndarray, y_r: np.ndarray, beta: float) -> np.ndarray:
    """The minimiser of the empirical DPO loss: ``theta_ref + Delta`` with ``beta Delta`` the logistic fit of
    ``y_c`` on the disagreement pairs (ties carry no gradient and are dropped)."""
    keep = y_c != y_r
    return theta_ref + logistic_fit(x[keep], y_c[keep], scale=beta)


def sft_converged(x: np.ndarray, y_c: np.ndarray) -> np.ndarray:
    """The minimiser of the SFT loss on the chosen responses (maximum likelihood of teacher 1's labels)."""
    return logistic_fit(x, y_c)


def dpo_gradient(theta_ref: np.ndarray, x: np.ndarray, y_c: np.ndarray, y_r: np.ndarray, beta: float) -> np.ndarray:
    """Gradient of the mean DPO loss over the disagreement pairs at ``theta = theta_ref``:
    ``-(beta / 2) mean_dis(y_c x)`` (sigma(0) = 1/2)."""
    keep = y_c != y_r
    return -(beta / 2.0) * (y_c[keep, None] * x[keep]).mean(axis=0)


def sft_gradient(theta: np.ndarray, x: np.ndarray, y_c: np.ndarray) -> np.ndarray:
    """Gradient of the mean SFT loss at ``theta``: ``-mean(y_c x sigma(-y_c <theta, x>))``."""
    return -((y_c * sigmoid(-y_c * (x @ theta)))[:, None] * x).mean(axis=0)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# --- one configuration, one seed ------------------------------------------------------------------------

def run_config(d: int, acc_student: float, acc_teacher_1: float, acc_teacher_2: float, rho: float, kappa: float,
               beta: float, n_pairs: int, lr: float, seed: int) -> dict[str, float]:
    """Everything measured for one (configuration, seed): accuracies of the three models, of one DPO and
    one SFT gradient step (learning rate ``lr``) and of the converged DPO and SFT students, and how well the
    converged DPO update matches the teachers' delta ``(theta_1 - theta_2) / beta``.

    The seed draws the frame and the data; configurations that differ only in teacher 2 share the draws.
    """
    rng = np.random.default_rng(seed)
    geom = make_geometry(d, acc_student, acc_teacher_1, acc_teacher_2, rho, kappa, rng)
    x, y_c, y_r = sample_pairs(geom, n_pairs, rng)
    ws, th = geom.w_star, geom.student
    acc_s = accuracy(th, ws)
    dpo_step = th - lr * dpo_gradient(th, x, y_c, y_r, beta)
    sft_step = th - lr * sft_gradient(th, x, y_c)
    th_dpo = dpo_converged(th, x, y_c, y_r, beta)
    th_sft = sft_converged(x, y_c)
    delta = (geom.teacher_1 - geom.teacher_2) / beta
    update = th_dpo - th
    return {
        "acc_student": acc_s,
        "acc_teacher_1": accuracy(geom.teacher_1, ws),
        "acc_teacher_2": accuracy(geom.teacher_2, ws),
        "disagreement": float(np.mean(y_c != y_r)),
        "chosen_correct_on_disagreement": float(np.mean((y_c == np.sign(x @ ws))[y_c != y_r])),
        "dpo_step_gain": accuracy(dpo_step, ws) - acc_s,
        "sft_step_gain": accuracy(sft_step, ws) - acc_s,
        "dpo_step_relative_size": float(np.linalg.norm(dpo_step - th) / np.linalg.norm(th)),
        "dpo_converged_gain": accuracy(th_dpo, ws) - acc_s,
        "sft_converged_gain": accuracy(th_sft, ws) - acc_s,
        "delta_cosine": cosine(update, delta),
        "delta_norm_ratio": float(np.linalg.norm(update) / np.linalg.norm(delta)),
    }


def run_grid(seeds: list[int], rhos: list[float], acc_teacher_2_grid: list[float], d: int, acc_student: float,
             acc_teacher_1: float, kappa: float, beta: float, n_pairs: int, lr: float):
    """One row per (seed, rho, teacher-2 accuracy)."""
    import pandas as pd

    rows = []
    for seed in seeds:
        for rho in rhos:
            for acc2 in acc_teacher_2_grid:
                row = run_config(d, acc_student, acc_teacher_1, acc2, rho, kappa, beta, n_pairs, lr, seed)
                rows.append({"seed": seed, "rho": rho, "acc_teacher_2_target": acc2,
                             "delta_accuracy": acc_teacher_1 - acc2, **row})
    return pd.DataFrame(rows)


# --- the whole training path (full-batch gradient descent from the student) -----------------------------

def gd_path(x: np.ndarray, y: np.ndarray, scale: float, theta_start: np.ndarray, offset: np.ndarray,
            theta_opt: np.ndarray, w_star: np.ndarray, max_steps: int = 20000, tol: float = 1e-3,
            step_fraction: float = 0.25) -> dict:
    """Full-batch gradient descent on ``mean log(1 + exp(-y scale <theta - offset, x>))`` from
    ``theta_start``, with the step ``step_fraction / L`` (``L = scale^2 / 4 * lambda_max(X^T X / n)``, the
    loss's smoothness constant: the loss falls at every step, the path follows gradient flow at a
    resolution of a quarter of the largest stable step, and no learning rate is tuned). DPO with the
    student as reference is ``scale = beta, offset = theta_ref`` on the disagreeing pairs; SFT is
    ``scale = 1, offset = 0`` on all prompts.

    Runs until the iterate is within ``tol`` of the way from the start to the known optimum ``theta_opt``
    (the Newton solution) or ``max_steps``. Returns the exact accuracy after every step (index 0 = start),
    the best along the path (oracle early stopping on the exact accuracy) and its step, the final
    accuracy, the steps taken and whether the tolerance was met.
    """
    import torch

    X = torch.as_tensor(x, dtype=torch.float64)
    yt = torch.as_tensor(y, dtype=torch.float64)
    n = X.shape[0]
    lmax = float(torch.linalg.eigvalsh(X.T @ X / n)[-1])
    step = step_fraction / (scale ** 2 / 4.0 * lmax)
    th = torch.as_tensor(theta_start, dtype=torch.float64).clone()
    off = torch.as_tensor(offset, dtype=torch.float64)
    opt = torch.as_tensor(theta_opt, dtype=torch.float64)
    span = float(torch.linalg.norm(opt - th))
    accs = [accuracy(th.numpy(), w_star)]
    converged = span == 0.0
    t = 0
    while not converged and t < max_steps:
        p = torch.sigmoid(-yt * scale * (X @ (th - off)))
        th = th + step * scale * (X.T @ (yt * p)) / n
        t += 1
        accs.append(accuracy(th.numpy(), w_star))
        converged = float(torch.linalg.norm(opt - th)) <= tol * span
    accs = np.asarray(accs)
    best = int(np.argmax(accs))
    return {"accuracies": accs, "best_accuracy": float(accs[best]), "best_step": best,
            "final_accuracy": float(accs[-1]), "steps": t, "reached_optimum": bool(converged), "step_size": step}


def run_paths(d: int, acc_student: float, acc_teacher_1: float, acc_teacher_2: float, rho: float, kappa: float,
              beta: float, n_pairs: int, seed: int, max_steps: int = 20000) -> tuple[list[dict], dict]:
    """For one (seed, rho): the gradient-descent paths of DPO and SFT from the student (teachers
    ``acc_teacher_1`` > ``acc_teacher_2``) and of the control, DPO on pairs whose rejected teacher is as
    accurate as the chosen one (zero quality delta; same frame, prompts and chosen labels, since a
    configuration that differs only in teacher 2 shares every draw). Rows: one per arm with the gains of
    the best point of the path and of its end; plus the accuracy curves (arm -> array)."""
    rows, curves = [], {}
    for arm, acc2 in (("dpo", acc_teacher_2), ("sft", acc_teacher_2), ("dpo_equal_teachers", acc_teacher_1)):
        rng = np.random.default_rng(seed)
        geom = make_geometry(d, acc_student, acc_teacher_1, acc2, rho, kappa, rng)
        x, y_c, y_r = sample_pairs(geom, n_pairs, rng)
        th = geom.student
        acc_s = accuracy(th, geom.w_star)
        if arm == "sft":
            path = gd_path(x, y_c, 1.0, th, np.zeros_like(th), sft_converged(x, y_c), geom.w_star, max_steps)
        else:
            keep = y_c != y_r
            path = gd_path(x[keep], y_c[keep], beta, th, th, dpo_converged(th, x, y_c, y_r, beta), geom.w_star,
                           max_steps)
        curves[arm] = path["accuracies"] - acc_s
        rows.append({"seed": seed, "rho": rho, "arm": arm, "acc_teacher_2": accuracy(geom.teacher_2, geom.w_star),
                     "best_gain": path["best_accuracy"] - acc_s, "best_step": path["best_step"],
                     "final_gain": path["final_accuracy"] - acc_s, "steps": path["steps"],
                     "reached_optimum": path["reached_optimum"], "step_size": path["step_size"]})
    return rows, curves
