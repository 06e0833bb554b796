"""Explainers behind one interface (`Explainer.fit` once per agent, then `importance(episode)` per step):
MAGIC-MASK's own mask and the published baselines it is compared with (docs/metrics.md has what each computes).

  magicmask  the trained mask's keep-probability m
  statemask  StateMask as simplified by RICE: a post-hoc PPO mask on the frozen policy, importance P(keep)
  edge       EDGE: GRU encoder + sparse variational GP regression of the episode's return, importance = the
             per-step mixing weight
  lazymdp    the LazyMDP gap max_a Q - mean_a Q with a Q head fitted post hoc (fitted Q evaluation)
  valuemax   |V(s)| from the policy's own critic
  random     seeded uniform random scores
"""
from __future__ import annotations

from importlib import import_module

from magicmask.explain.baselines.base import Explainer
from magicmask.protocol.config import EXPLAINERS


def make_explainer(name: str, cfg) -> Explainer:
    """A fresh explainer for one agent; `cfg` is the run's Config (budgets from cfg.explain). The names are
    config.EXPLAINERS, and explainer `x` is the class `EXPLAINER` of the module `explain/baselines/x.py`
    (imported on first use: EDGE's gpytorch loads only when EDGE runs)."""
    key = str(name).strip().lower()
    if key not in EXPLAINERS:
        raise ValueError(f"unknown explainer {name!r}; known: {', '.join(EXPLAINERS)}")
    return import_module(f"magicmask.explain.baselines.{key}").EXPLAINER(cfg)


__all__ = ["Explainer", "make_explainer"]
