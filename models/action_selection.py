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

import math

import numpy as np


# The actor calls these on 4-16 rows every step, where a numpy call costs more than its arithmetic: so
# in-place updates, and ufunc reductions called directly (ndarray.sum / max / cumsum go through Python-side
# wrappers first). The results are the same bits as the plain forms.

def softmax_legal(logits: np.ndarray, legal: np.ndarray) -> np.ndarray:
    """Policy probabilities restricted to legal actions (float64 for exact log-probabilities)."""
    z = np.where(legal, logits.astype(np.float64), -np.inf)
    z -= np.maximum.reduce(z, axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= np.add.reduce(z, axis=-1, keepdims=True)
    return z


def uniform_legal(legal: np.ndarray) -> np.ndarray:
    return legal / np.add.reduce(legal, axis=-1, keepdims=True, dtype=np.float64)


def epsilon(t: int, eps0: float, eps_min: float, decay: float, fixed: bool) -> float:
    """Adaptive epsilon-greedy schedule eps_t = max(eps_min, eps0 * exp(-decay * t))."""
    return eps0 if fixed else max(eps_min, eps0 * math.exp(-decay * t))   # math: a numpy scalar call costs 2x


def behaviour_probs(pi, legal, m, eps, masked, guided) -> np.ndarray:
    """The full behaviour distribution mu[B, A] (see the module docstring)."""
    u = uniform_legal(legal)
    m = m[:, None].astype(np.float64)
    inner = np.where(masked[:, None], m * pi + (1.0 - m) * u, pi)
    mu = eps * u + (1.0 - eps) * inner
    return np.where(guided[:, None], pi, mu)


def _inverse_cdf(probs: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Row i's action for its uniform draw r[i] in [0, 1) (rows of probs[B, A] need not sum to 1)."""
    c = np.add.accumulate(probs, axis=-1)
    return np.minimum(np.add.reduce(c < r[:, None] * c[:, -1:], axis=-1), probs.shape[-1] - 1)


def sample_rows(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One action per row of probs[B, A] by the inverse CDF: one uniform draw per row, several times cheaper
    than rng.choice(p=...) per row."""
    return _inverse_cdf(probs, rng.random(probs.shape[0]))


def select_training(rng, pi, legal, m, eps, masked, guided):
    """Sample actions for a batch of copies; returns (actions, logp_mu, perturbed, eps_random, mask_applied).

    The same draws and results, bit for bit, as the plain form (tests/unit/test_action_selection.py keeps
    it): draw the epsilon coins, the mask coins, `sample_rows` of U and `sample_rows` of pi, take U's
    action where a coin said random, and log `behaviour_probs` at the action. Here in about half the numpy
    calls, because the actor pays this every step: the four draws of b come from one call (the same
    stream), each row is sampled only from the distribution it uses, and mu only at the action taken."""
    b = pi.shape[0]
    coin_eps, coin_mask, r_uniform, r_pi = rng.random((4, b))
    eps_random = (coin_eps < eps) & ~guided
    mask_applied = masked & ~guided & ~eps_random
    perturbed = mask_applied & (coin_mask >= m)
    random_action = eps_random | perturbed
    u = uniform_legal(legal)
    actions = _inverse_cdf(np.where(random_action[:, None], u, pi), np.where(random_action, r_uniform, r_pi))
    rows = np.arange(b)
    pi_a, u_a, m = pi[rows, actions], u[rows, actions], m.astype(np.float64)
    mu_a = eps * u_a + (1.0 - eps) * np.where(masked, m * pi_a + (1.0 - m) * u_a, pi_a)
    return actions, np.log(np.where(guided, pi_a, mu_a)), perturbed, eps_random, mask_applied


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
