"""The loss pieces of PPO for a policy and a binary mask, per sample and pure (no state): used by the learner's
batched update and by post-hoc explainers that train their own PPO mask (StateMask), so they live in the
shared models layer rather than in one role.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def clipped_policy_loss(logp_new, logp_prox, logp_mu, adv, clip: float, is_clip: float, is_floor: float = 0.0):
    """Decoupled PPO (Hilton, Cobbe, Schulman 2021), per sample, to be averaged:
        -w * min(r A, clip(r, 1 - clip, 1 + clip) A),   r = pi_theta / pi_prox,   w = min(pi_prox/mu, is_clip)
    (where A > 0: w = min(max(pi_prox/mu, is_floor), is_clip)).
    The trust region is centred on pi_prox; the truncated weight pi_prox/mu corrects for the behaviour
    that really acted (mask, epsilon, stale weights). The weight carries no gradient. `is_floor` > 0 bounds the
    weight from below where A > 0 only: an exploratory action the policy gives ~0 that turned out well teaches
    it at that weight (the exact one, ~pi_prox / (eps / n), is ~0), while one that turned out badly keeps its
    exact weight (floored too, pushing it down would push the policy's favourite up: docs/ALGORITHM.md)."""
    ratio = torch.exp(logp_new - logp_prox)
    exact = torch.exp(logp_prox - logp_mu)
    is_weight = torch.where(adv > 0, exact.clamp(min=is_floor), exact).clamp(max=is_clip).detach()
    surrogate = torch.min(ratio * adv, ratio.clamp(1.0 - clip, 1.0 + clip) * adv)
    return -is_weight * surrogate


def clipped_value_loss(new_values, old_values, returns, clip: float):
    """0.5 * max((V - R)^2, (V_old + clip(V - V_old, +-clip) - R)^2) per sample; clip 0: plain 0.5 (V - R)^2."""
    unclipped = (new_values - returns) ** 2
    if clip <= 0:
        return 0.5 * unclipped
    clipped = old_values + (new_values - old_values).clamp(-clip, clip)
    return 0.5 * torch.max(unclipped, (clipped - returns) ** 2)


def masked_mean(x, valid, dim=-1):
    """Mean of x over `dim` on the valid entries (0 where there are none; invalid entries may be inf/NaN)."""
    valid = valid.bool()
    return torch.where(valid, x, 0.0).sum(dim) / valid.sum(dim).clamp_min(1)


def normalize(x, valid=None, dim=-1):
    """Advantage normalisation: (x - mean) / (std + 1e-8) over `dim` (unbiased std, as CleanRL)."""
    if valid is None:
        return (x - x.mean(dim, keepdim=True)) / (x.std(dim, keepdim=True) + 1e-8)
    valid = valid.bool()
    count = valid.sum(dim, keepdim=True)
    mean = torch.where(valid, x, 0.0).sum(dim, keepdim=True) / count.clamp_min(1)
    var = torch.where(valid, (x - mean) ** 2, 0.0).sum(dim, keepdim=True) / (count - 1).clamp_min(1)
    return (x - mean) / (var.sqrt() + 1e-8)


def bernoulli_logp(keep_logit, perturbed):
    """log-probability of the mask's action: perturb with P = 1 - m = sigmoid(-logit), keep with m."""
    return torch.where(perturbed.bool(), F.logsigmoid(-keep_logit), F.logsigmoid(keep_logit))


def bernoulli_entropy(keep_logit):
    """Entropy of the mask's coin, m = sigmoid(logit), computed from the logit (stable where m saturates)."""
    m = torch.sigmoid(keep_logit)
    return -(m * F.logsigmoid(keep_logit) + (1 - m) * F.logsigmoid(-keep_logit))


def legal_entropy(logp_all, legal):
    """Entropy of the legal-masked policy (illegal actions have probability 0 and contribute 0)."""
    return -torch.where(legal, logp_all.exp() * logp_all, 0.0).sum(-1)


def behaviour_probs(pi, legal, m, eps, masked, guided):
    """The full behaviour distribution mu[..., A] the actor sampled from (actors/action_selection.py):
    guided: pi; else eps * U + (1 - eps) * (m * pi + (1 - m) * U if masked else pi), U uniform on legal."""
    u = legal.to(pi.dtype)
    u = u / u.sum(-1, keepdim=True).clamp_min(1)
    m, eps = m[..., None].to(pi.dtype), eps[..., None].to(pi.dtype)
    inner = torch.where(masked[..., None].bool(), m * pi + (1 - m) * u, pi)
    mu = eps * u + (1 - eps) * inner
    return torch.where(guided[..., None].bool(), pi, mu)


def action_columns(legal: torch.Tensor) -> torch.Tensor | None:
    """Sorted ids of the actions legal somewhere in `legal[..., A]`, or None when that is every action.
    An action that is illegal in every sample has probability 0 in every term of the losses (surrogate,
    entropy, KL(pi || mu)), so leaving its logit out changes no value and no gradient. Dou Dizhu's minibatches
    use a few hundred of its 27,472 actions, and the policy head then computes only those columns."""
    seen = legal.reshape(-1, legal.shape[-1]).any(0)
    return None if bool(seen.all()) else seen.nonzero().squeeze(-1)


def kl_pi_mu(logp_all, legal, m, eps, masked, guided):
    """KL(pi || mu) per state, summed over the legal actions; logp_all is the legal-masked log pi."""
    pi = logp_all.exp()
    mu = behaviour_probs(pi, legal, m, eps, masked, guided)
    log_mu = mu.clamp_min(torch.finfo(mu.dtype).tiny).log()
    return torch.where(legal, pi * (logp_all - log_mu), 0.0).sum(-1)
