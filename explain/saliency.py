"""Observation saliency of the mask: which observation features move an agent's keep-probability m. It explains
a trained run (the report draws it), so it lives with the explanation code, not in the report."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from magicmask.explain.episodes import TrainedRun, record_episodes


@dataclass
class Saliency:
    """Mean |dm/dobs| of one agent, shaped like one observation, and the steps it was taken over."""
    all_steps: np.ndarray              # [*obs_shape], over every step used
    critical: np.ndarray | None        # [*obs_shape], over the truly critical steps; None without ground truth
    obs: np.ndarray                    # [N, *obs_shape] float32, the steps used
    m: np.ndarray                      # [N], the mask's keep-probability at each of them


def saliency(run: TrainedRun, agent: int, episodes: int = 4, first_seed: int = 0, max_steps: int = 2000,
             chunk: int = 256) -> Saliency:
    """Mean |dm/dobs| over the steps of `episodes` unmasked episodes of one agent. At most `max_steps` steps
    (evenly spaced) enter, `chunk` at a time, so long image episodes stay cheap."""
    eps = record_episodes(run, agent, episodes, first_seed=first_seed, masked=False)
    obs = np.concatenate([e.obs for e in eps]).astype(np.float32)
    crit = None
    if all(e.true_critical is not None for e in eps):
        crit = np.concatenate([e.true_critical for e in eps])
    if len(obs) > max_steps:
        idx = np.linspace(0, len(obs) - 1, max_steps).astype(np.int64)
        obs, crit = obs[idx], (crit[idx] if crit is not None else None)
    nets = run.policies[agent].nets
    grads, ms = [], []
    for i in range(0, len(obs), chunk):
        x = torch.as_tensor(obs[i:i + chunk]).requires_grad_(True)
        with torch.enable_grad():
            _, _, mask_logit, _ = nets(x[None])
            m = torch.sigmoid(mask_logit[0])
            (g,) = torch.autograd.grad(m.sum(), x)   # rows are independent: d m_j / d obs_j per step
        grads.append(g.abs().numpy())
        ms.append(m.detach().numpy())
    g_abs = np.concatenate(grads)
    g_crit = g_abs[crit].mean(0) if crit is not None and crit.any() else None
    return Saliency(g_abs.mean(0), g_crit, obs, np.concatenate(ms))
