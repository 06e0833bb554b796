"""Explainers behind one interface (`Explainer.fit` once per agent, then `importance(episode)` per step):
MAGIC-MASK's own mask and the published baselines it is compared with (shared/reference/explainers.md).

  magicmask  the trained mask's keep-probability m
  statemask  StateMask as simplified by RICE: a post-hoc PPO mask on the frozen policy, importance P(keep)
  edge       EDGE: GRU encoder + sparse variational GP regression of the episode's return, importance = the
             per-step mixing weight
  lazymdp    the LazyMDP gap max_a Q - mean_a Q with a Q head fitted post hoc (fitted Q evaluation)
  valuemax   |V(s)| from the policy's own critic
  random     seeded uniform random scores
"""
from __future__ import annotations

from magicmask.explain.baselines.base import Explainer

NAMES = ("magicmask", "statemask", "edge", "lazymdp", "valuemax", "random")


def make_explainer(name: str, cfg) -> Explainer:
    """A fresh explainer for one agent; `cfg` is the run's protocol.config.Config (budgets from cfg.explain)."""
    key = str(name).strip().lower()
    if key == "magicmask":
        from magicmask.explain.baselines.magicmask import MagicMaskExplainer as cls
    elif key == "statemask":
        from magicmask.explain.baselines.statemask import StateMaskExplainer as cls
    elif key == "edge":
        from magicmask.explain.baselines.edge import EdgeExplainer as cls
    elif key == "lazymdp":
        from magicmask.explain.baselines.lazymdp import LazyMDPExplainer as cls
    elif key == "valuemax":
        from magicmask.explain.baselines.valuemax import ValueMaxExplainer as cls
    elif key == "random":
        from magicmask.explain.baselines.random import RandomExplainer as cls
    else:
        raise ValueError(f"unknown explainer {name!r}; known: {', '.join(NAMES)}")
    return cls(cfg)


__all__ = ["NAMES", "Explainer", "make_explainer"]
