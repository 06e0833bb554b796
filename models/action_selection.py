"""Masked action selection: the behaviour distribution an actor really samples from, and its log-probability.

Training (per env copy, with policy pi over the legal set L(s), keep-probability m, epsilon eps):
  guided step (a peer marked s critical):  mu = pi                       (nothing perturbs it)
  otherwise:                               mu = eps * U + (1 - eps) * inner
    inner = m * pi + (1 - m) * U   on a masked copy after the mask warm-up ("masked")
    inner = pi                     otherwise
U is uniform over L(s). The sampled coins are recorded: `eps_random` (epsilon fired), `perturbed` (the mask's
coin said perturb), `mask_applied` (the mask's coin decided the action: masked and not eps_random). The
learner needs log mu(a|s) for its importance weights, so it is computed from the mixture, not from the coin.

Explaining (deterministic rule of the paper): perturbed iff m <= tau; a perturbed step takes a uniform random
legal action, optionally one other than the policy's own choice (the fidelity test's rule).
"""
from __future__ import annotations

import numpy as np


def softmax_legal(logits: np.ndarray, legal: np.ndarray) -> np.ndarray:
    """Policy probabilities restricted to legal actions (float64 for exact log-probabilities)."""
    z = np.where(legal, logits.astype(np.float64), -np.inf)
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=-1, keepdims=True)


def uniform_legal(legal: np.ndarray) -> np.ndarray:
    u = legal.astype(np.float64)
    return u / u.sum(axis=-1, keepdims=True)


def epsilon(t: int, eps0: float, eps_min: float, decay: float, fixed: bool) -> float:
    """Adaptive epsilon-greedy schedule eps_t = max(eps_min, eps0 * exp(-decay * t))."""
    return eps0 if fixed else max(eps_min, eps0 * float(np.exp(-decay * t)))


def behaviour_probs(pi, legal, m, eps, masked, guided) -> np.ndarray:
    """The full behaviour distribution mu[B, A] (see the module docstring)."""
    u = uniform_legal(legal)
    m = m[:, None].astype(np.float64)
    inner = np.where(masked[:, None], m * pi + (1.0 - m) * u, pi)
    mu = eps * u + (1.0 - eps) * inner
    return np.where(guided[:, None], pi, mu)


def sample_rows(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One action per row of probs[B, A] by the inverse CDF (rows need not sum to 1): one uniform draw per
    row, several times cheaper than rng.choice(p=...) per row."""
    c = probs.cumsum(axis=-1)
    r = rng.random((probs.shape[0], 1)) * c[:, -1:]
    return np.minimum((c < r).sum(axis=-1), probs.shape[-1] - 1)


def select_training(rng, pi, legal, m, eps, masked, guided):
    """Sample actions for a batch of copies; returns (actions, logp_mu, perturbed, eps_random, mask_applied)."""
    b = pi.shape[0]
    u = uniform_legal(legal)
    eps_random = (rng.random(b) < eps) & ~guided
    perturbed = masked & ~guided & ~eps_random & (rng.random(b) >= m)
    random_action = eps_random | perturbed
    actions = np.where(random_action, sample_rows(rng, u), sample_rows(rng, pi))
    mu = behaviour_probs(pi, legal, m, eps, masked, guided)
    logp_mu = np.log(mu[np.arange(b), actions])
    mask_applied = masked & ~guided & ~eps_random
    return actions, logp_mu, perturbed, eps_random, mask_applied


def select_explaining(rng, pi, legal, m, tau, greedy=True, exclude_own=False):
    """The paper's deterministic rule: perturb iff m <= tau. Returns (actions, own_actions, perturbed)."""
    own = pi.argmax(axis=-1) if greedy else sample_rows(rng, pi)
    perturbed = m <= tau
    choices = legal.copy()
    if exclude_own:
        alt = choices.copy()
        alt[np.arange(len(own)), own] = False
        has_alt = alt.any(axis=-1)
        choices = np.where(has_alt[:, None], alt, choices)
    rand = sample_rows(rng, uniform_legal(choices))
    return np.where(perturbed, rand, own), own, perturbed
