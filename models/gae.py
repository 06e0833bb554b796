"""Generalised advantage estimation (Schulman et al. 2016) with truncation bootstrapping."""
from __future__ import annotations

import torch


def gae(rewards: torch.Tensor, values: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor,
        final_values: torch.Tensor, boot_values: torch.Tensor, gamma: float, lam: float, time_dim: int = 0):
    """GAE(lambda) over arrays whose axis `time_dim` is time and whose other axes are a batch, e.g.
    [T, E] (time_dim=0) or [N, T, E] (time_dim=1). `boot_values` has the shape without the time axis.

    The value of the next state, per step t:
      terminated[t]:            0                  (a real end: nothing follows)
      truncated[t] (not term.): final_values[t]    (value of the real final observation: bootstrapping on
                                                    truncation; the next observation is already a reset)
      else, t < T-1:            values[t+1]
      else, t = T-1:            boot_values        (value of the observation after the fragment)
    and the GAE chain restarts after every terminated or truncated step.
    Returns (advantages, returns = advantages + values), both shaped like `values`.
    """
    r, v = rewards.movedim(time_dim, 0), values.movedim(time_dim, 0)
    term, trunc = terminated.movedim(time_dim, 0).bool(), truncated.movedim(time_dim, 0).bool()
    fv = final_values.movedim(time_dim, 0).to(v.dtype)
    r = r.to(v.dtype)
    next_v = torch.cat([v[1:], boot_values.to(v.dtype).unsqueeze(0)])   # values[t+1], boot_values at the end
    next_v = torch.where(term, torch.zeros_like(v), torch.where(trunc, fv, next_v))
    delta = r + gamma * next_v - v                                      # TD errors, all steps at once
    carry = gamma * lam * (~(term | trunc)).to(v.dtype)                 # the chain resets after an end
    adv = torch.empty_like(v)
    next_adv = torch.zeros_like(v[0])
    for t in reversed(range(v.shape[0])):   # the one recursive part: two small ops per step
        adv[t] = next_adv = delta[t] + carry[t] * next_adv
    advantages = adv.movedim(0, time_dim)
    return advantages, advantages + values
