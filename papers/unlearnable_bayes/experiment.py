"""The experiment grid: per seed, protect one half of the digits with each method at each budget, then train
every architecture on every arm with the same steps, learning rate and batch size.

Arms (``setting`` / ``method``):
- ``clean_only`` / ``none``: the clean half alone (the reference every claim compares with);
- ``mix`` / ``clean``: clean half + the protected half left unperturbed (what the extra data is worth);
- ``mix`` / ``random`` | ``em`` | ``beo`` at each eps: clean half + the perturbed half, true labels;
- ``mix`` / ``shifted_labels``: clean half + the protected half with labels (y + 1) mod 10 (harmful by
  construction; the control of the EM claim);
- ``only`` / ``clean`` | ``em`` | ``beo`` at the claims' eps: the protected half alone (does the noise work
  when it is all the data? the gate of the EM claim).
"""

from __future__ import annotations

import numpy as np

from .method import (ARCHITECTURES, beo_perturb, cover_hart_bayes_error, digits_split, em_perturb,
                     kernel_posterior_bayes_error, make_gmm, median_nn_distance, random_perturb, train_and_test)

METHODS = ("random", "em", "beo")


def gmm_check(seed: int, n: int, d: int, d_latent: int, separations: list[float], noise: float,
              n_mc: int) -> list[dict]:
    """The estimator check: Cover-Hart estimate (with and without leave-one-out) vs the exact Bayes error
    of Gaussian mixtures of the protected half's size and dimension."""
    rows = []
    for i, sep in enumerate(separations):
        x, y, be = make_gmm(n, 10, d_latent, d, sep, noise, seed=10_000 * (seed + 1) + i, n_mc=n_mc)
        rows.append({"seed": seed, "separation": sep, "exact_be": be,
                     "cover_hart_be": cover_hart_bayes_error(x, y),
                     "cover_hart_be_no_loo": cover_hart_bayes_error(x, y, leave_one_out=False)})
    return rows


def protect_seed(seed: int, eps_list: list[float], beo_steps: int, em_rounds: int, em_train_steps: int,
                 em_pgd_steps: int, test_fraction: float) -> dict:
    """Split the digits for ``seed`` and perturb the protected half with every method at every eps.

    Returns the split, the perturbed halves keyed by (method, eps), and one row per (method, eps) with the
    Bayes-error estimates of the protected half (Cover-Hart and BEO's kernel objective) and the largest
    |delta|_inf."""
    import torch

    torch.set_num_threads(1)
    split = digits_split(seed, test_fraction)
    x0, y0 = split.x_protect, split.y_protect
    sigma = median_nn_distance(x0)
    yt = torch.as_tensor(y0)

    def kernel_be(x):
        return float(kernel_posterior_bayes_error(torch.as_tensor(x), yt, 10, sigma))

    perturbed: dict[tuple[str, float], np.ndarray] = {}
    rows = [{"seed": seed, "method": "clean", "eps": 0.0, "cover_hart_be": cover_hart_bayes_error(x0, y0),
             "kernel_be": kernel_be(x0), "linf": 0.0, "sigma": sigma, "em_surrogate_acc": np.nan}]
    for j, eps in enumerate(eps_list):
        for method in METHODS:
            em_acc = np.nan
            if method == "random":
                xp = random_perturb(x0, eps, seed=seed * 1000 + j)
            elif method == "em":
                xp, em_acc = em_perturb(x0, y0, eps, seed=seed * 1000 + j, rounds=em_rounds,
                                        train_steps=em_train_steps, pgd_steps=em_pgd_steps)
            else:
                xp, _ = beo_perturb(x0, y0, eps, beo_steps, sigma)
            perturbed[(method, eps)] = xp
            rows.append({"seed": seed, "method": method, "eps": eps, "cover_hart_be": cover_hart_bayes_error(xp, y0),
                         "kernel_be": kernel_be(xp), "linf": float(np.abs(xp - x0).max()), "sigma": sigma,
                         "em_surrogate_acc": em_acc})
    return {"split": split, "perturbed": perturbed, "rows": rows}


def arms(split, perturbed: dict, eps_list: list[float], claim_eps: float) -> list[tuple[str, str, float, np.ndarray, np.ndarray]]:
    """(setting, method, eps, x_train, y_train) of every arm, in a fixed order."""
    xc, yc, xp, yp = split.x_clean, split.y_clean, split.x_protect, split.y_protect

    def mix(x, y):
        return np.concatenate([xc, x]), np.concatenate([yc, y])

    out = [("clean_only", "none", 0.0, xc, yc),
           ("mix", "clean", 0.0, *mix(xp, yp)),
           ("mix", "shifted_labels", 0.0, *mix(xp, (yp + 1) % 10))]
    for eps in eps_list:
        for method in METHODS:
            out.append(("mix", method, eps, *mix(perturbed[(method, eps)], yp)))
    out.append(("only", "clean", 0.0, xp, yp))
    for method in ("em", "beo"):
        out.append(("only", method, claim_eps, perturbed[(method, claim_eps)], yp))
    return out


def train_seed_arch(seed: int, arch: str, arm_list: list, x_test: np.ndarray, y_test: np.ndarray, steps: int,
                    lr: float, batch_size: int) -> list[dict]:
    """Train ``arch`` on every arm of ``seed`` (same init seed, steps, lr, batch size for all arms)."""
    import torch

    torch.set_num_threads(1)
    rows = []
    for setting, method, eps, x, y in arm_list:
        r = train_and_test(arch, x, y, x_test, y_test, seed=seed * 100 + ARCHITECTURES.index(arch), steps=steps,
                           lr=lr, batch_size=batch_size)
        rows.append({"seed": seed, "arch": arch, "setting": setting, "method": method, "eps": eps, **r})
    return rows
