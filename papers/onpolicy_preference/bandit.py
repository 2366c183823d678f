"""The didactic contextual bandit of the paper, its preference data and the fine-tuning objectives.

Environment (authors' code, ``bandit_experiment/``: hyperparam_tuning.py, reward_functions.py, utils.py):

- context ``s ~ U[0, 1]^100`` (the reward does not depend on it; it only makes the policy a function);
- 100 discrete actions ("tokens") ``a = 0..99``, bin ``a`` covering ``[-1 + 0.02 a, -1 + 0.02 (a + 1))``;
- reference policy ``pi_ref``: ``tanh(x)`` with ``x ~ Cauchy(loc=-0.7, scale=0.4)``, binned into the 100 actions.
  The authors estimate the bins from a 10,000-sample histogram; here the bin masses are computed exactly from
  the Cauchy CDF, so no bin has zero mass (a zero bin makes ``log pi_ref`` infinite);
- reward ``r(a) = exp(-((a - peak) / 10)^2)`` with the peak at 70 (``R1`` here, "reward_4": optimum in a
  low-likelihood region of ``pi_ref``) or at 20 (``R2``, "reward_5": optimum aligned with ``pi_ref``'s mode).

Objectives (all take per-state log-probabilities ``logp`` of shape ``(S, n, A)``: S seeds vectorised, n states,
A actions; every loss returns one scalar per seed, shape ``(S,)``):

- ``best_of_n_sft_loss``: maximum likelihood on the best of N samples per prompt (Pref-FT / filtered BC when
  the samples come from ``pi_ref``; on-policy best-of-N when they come from the current policy). No negative
  gradient.
- ``ipo_loss`` / ``dpo_loss``: contrastive losses on all pairs of the N samples, winner = higher reward; they
  push ``log pi(y_l)`` down (the "negative gradient").
- ``reinforce_loss``: on-policy policy gradient with a running-normalised reward (negative advantages push
  likelihood down too).
- ``forward_kl`` / ``reverse_kl``: the two ways of fitting a categorical policy to a target; reverse KL to
  ``pi* ~ pi_ref exp(r / beta)`` is the KL-regularised RL objective (mode-seeking), forward KL to the same
  target is reward-weighted maximum likelihood with infinite data (mode-covering).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

N_ACTIONS = 100
CONTEXT_DIM = 100
REWARD_PEAKS = {"R1": 70.0, "R2": 20.0}  # R1 = authors' reward_4 (not aligned), R2 = reward_5 (aligned)
REWARD_WIDTH = 10.0


# --- environment -----------------------------------------------------------------------------------------

def reference_policy(n_actions: int = N_ACTIONS, loc: float = -0.7, scale: float = 0.4) -> np.ndarray:
    """Exact bin masses of tanh(Cauchy(loc, scale)) on [-1, 1] split into ``n_actions`` equal bins.

    P(bin a) = F(atanh(e_{a+1})) - F(atanh(e_a)), F the Cauchy CDF, e_a = -1 + 2a / n_actions (atanh(+-1) =
    +-inf, so the outer bins take the tails).
    """
    edges = np.linspace(-1.0, 1.0, n_actions + 1)
    with np.errstate(divide="ignore"):
        x = np.arctanh(edges)
    cdf = 0.5 + np.arctan((x - loc) / scale) / np.pi
    probs = np.diff(cdf)
    return probs / probs.sum()


def reward_vector(peak: float, n_actions: int = N_ACTIONS, width: float = REWARD_WIDTH) -> np.ndarray:
    """r(a) = exp(-((a - peak) / width)^2) for every action a (authors' reward_4 / reward_5)."""
    a = np.arange(n_actions, dtype=float)
    return np.exp(-(((a - peak) / width) ** 2))


def peak_region(peak: float, n_actions: int = N_ACTIONS, width: float = REWARD_WIDTH) -> np.ndarray:
    """Boolean mask of the actions within one width of the peak, i.e. with r(a) >= 1/e."""
    return np.abs(np.arange(n_actions) - peak) <= width


def sample_contexts(n: int, generator: torch.Generator, dim: int = CONTEXT_DIM) -> torch.Tensor:
    """(n, dim) contexts from U[0, 1]^dim."""
    return torch.rand(n, dim, generator=generator)


def kl_regularised_target(log_ref: torch.Tensor, reward: torch.Tensor, beta: float) -> torch.Tensor:
    """log pi*(a) of the optimum of E_pi[r] - beta KL(pi || pi_ref): pi* ~ pi_ref exp(r / beta)."""
    return torch.log_softmax(log_ref + reward / beta, dim=-1)


# --- exact metrics of a categorical policy (no sampling) -------------------------------------------------

def expected_reward(logp: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
    """E_{s} sum_a pi(a|s) r(a): (..., n, A) -> (...)."""
    return (logp.exp() * reward).sum(-1).mean(-1)


def region_mass(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over states of the probability mass on the actions in ``mask``: (..., n, A) -> (...)."""
    return (logp.exp() * mask).sum(-1).mean(-1)


def entropy(logp: torch.Tensor) -> torch.Tensor:
    """Mean over states of H(pi(.|s)) in nats: (..., n, A) -> (...)."""
    return -(logp.exp() * logp).sum(-1).mean(-1)


def reverse_kl(logp: torch.Tensor, log_target: torch.Tensor) -> torch.Tensor:
    """Mean over states of KL(pi || target) = sum_a pi (log pi - log target): mode-seeking."""
    return (logp.exp() * (logp - log_target)).sum(-1).mean(-1)


def forward_kl(logp: torch.Tensor, log_target: torch.Tensor) -> torch.Tensor:
    """Mean over states of KL(target || pi) = sum_a target (log target - log pi): mode-covering
    (its gradient is that of maximum likelihood on samples of the target)."""
    return (log_target.exp() * (log_target - logp)).sum(-1).mean(-1)


# --- preference data -------------------------------------------------------------------------------------

def sample_actions(logp: torch.Tensor, n_samples: int, generator: torch.Generator) -> torch.Tensor:
    """N i.i.d. actions per state from the categorical ``exp(logp)``: (n, A) -> (n, N) long."""
    return torch.multinomial(logp.exp(), n_samples, replacement=True, generator=generator)


def best_index(rewards: torch.Tensor) -> torch.Tensor:
    """Index of the highest-reward sample per state (first one on ties, like numpy.argmax): (..., N) -> (...)."""
    return rewards.argmax(dim=-1)


def preference_pairs(rewards: torch.Tensor, threshold: float | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All pairs (i < j) of the N samples of every state, ordered (winner, loser) by reward.

    Returns winner and loser indices, shape (..., P) with P = N (N - 1) / 2, and a validity mask that drops
    pairs whose reward gap is below ``threshold`` (the authors' ``reward_threshold``; None keeps all). On a
    tie the second sample of the pair is the winner (the authors' rule); a tie has zero margin gradient
    only when the two actions coincide.
    """
    n = rewards.shape[-1]
    i, j = torch.triu_indices(n, n, offset=1, device=rewards.device)
    ri, rj = rewards[..., i], rewards[..., j]
    first_wins = ri > rj
    winner = torch.where(first_wins, i.expand_as(ri), j.expand_as(ri))
    loser = torch.where(first_wins, j.expand_as(ri), i.expand_as(ri))
    valid = torch.ones_like(ri, dtype=torch.bool) if threshold is None else (ri - rj).abs() >= threshold
    return winner, loser, valid


# --- objectives (one scalar per seed) --------------------------------------------------------------------

def _action_logp(logp: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log pi(a|s) of the given actions: logp (S, n, A), actions (S, n, N) -> (S, n, N)."""
    return torch.gather(logp, -1, actions)


def best_of_n_sft_loss(logp: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """-mean_s log pi(a_best(s) | s): maximum likelihood on the preferred sample, no negative gradient."""
    best = best_index(rewards).unsqueeze(-1)  # (S, n, 1)
    return -torch.gather(_action_logp(logp, actions), -1, best).squeeze(-1).mean(-1)


def _pair_margins(logp: torch.Tensor, log_ref: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
                  threshold: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """h = [log pi(y_w) - log pi_ref(y_w)] - [log pi(y_l) - log pi_ref(y_l)] for every pair, and the mask."""
    ratio = _action_logp(logp, actions) - log_ref[actions]  # (S, n, N)
    winner, loser, valid = preference_pairs(rewards, threshold)
    h = torch.gather(ratio, -1, winner) - torch.gather(ratio, -1, loser)  # (S, n, P)
    return h, valid


def _masked_mean_per_seed(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Sum of the valid pair losses divided by their number, per seed (0 when a seed has no valid pair)."""
    v = valid.to(values.dtype)
    total = (values * v).flatten(1).sum(-1)
    count = v.flatten(1).sum(-1)
    return total / count.clamp_min(1.0)


def ipo_loss(logp: torch.Tensor, log_ref: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
             tau: float, threshold: float | None = None) -> torch.Tensor:
    """IPO (Azar et al. 2023): mean over valid pairs of (h - 1/(2 tau))^2."""
    h, valid = _pair_margins(logp, log_ref, actions, rewards, threshold)
    return _masked_mean_per_seed((h - 1.0 / (2.0 * tau)) ** 2, valid)


def dpo_loss(logp: torch.Tensor, log_ref: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
             beta: float, threshold: float | None = None) -> torch.Tensor:
    """DPO (Rafailov et al. 2023): mean over valid pairs of -log sigmoid(beta h)."""
    h, valid = _pair_margins(logp, log_ref, actions, rewards, threshold)
    return _masked_mean_per_seed(-F.logsigmoid(beta * h), valid)


def reinforce_loss(logp: torch.Tensor, actions: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """-mean log pi(a|s) * A over the samples of each seed (A: normalised rewards, no gradient)."""
    return -(_action_logp(logp, actions) * advantages).flatten(1).mean(-1)


class RunningNormalizer:
    """Running mean and standard deviation of every reward seen so far, per seed (the authors' REINFORCE
    normalises with running statistics over all rewards, not per state). ``update`` then ``normalize``."""

    def __init__(self, n_seeds: int):
        self.count = torch.zeros(n_seeds, dtype=torch.float64)
        self.total = torch.zeros(n_seeds, dtype=torch.float64)
        self.total_sq = torch.zeros(n_seeds, dtype=torch.float64)

    def update(self, rewards: torch.Tensor) -> None:
        r = rewards.flatten(1).to(torch.float64)
        self.count += r.shape[1]
        self.total += r.sum(1)
        self.total_sq += (r * r).sum(1)

    def normalize(self, rewards: torch.Tensor) -> torch.Tensor:
        mean = self.total / self.count
        var = (self.total_sq / self.count - mean * mean).clamp_min(0.0)
        shape = (-1,) + (1,) * (rewards.dim() - 1)
        out = (rewards.to(torch.float64) - mean.view(shape)) / (var.sqrt().view(shape) + 1e-12)
        return out.to(rewards.dtype)


def n_pairs(n_samples: int) -> int:
    return math.comb(n_samples, 2)
