"""Fixed per-action feature tables, by the name an EnvSpec gives in `action_features`.

The "features" policy head (learner/networks.py) scores every action a by <f(s), g(E[a])>, with E the
env's table [n_actions, F]. A table is a pure function of the environment's rules, so every process
(learner, actors, explain) builds it from the name instead of receiving it: nothing variable-length ever
travels in fragments or weights.

- `doudizhu`: RLCard's 54-value card-count encoding of each of the 27,472 actions (4 x 13 rank counts as
  cumulative ones, then the two jokers; 'pass' is all zeros), exactly `DoudizhuEnv.get_action_feature`. It
  is the action encoding DouZero feeds its Q(s, a) network (Zha et al., ICML 2021).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np


def _doudizhu() -> np.ndarray:
    import rlcard  # the doudizhu extra; imported only when a run uses this table
    env = rlcard.make("doudizhu")
    return np.stack([env.get_action_feature(a) for a in range(env.num_actions)])


TABLES = {"doudizhu": _doudizhu}


@lru_cache(maxsize=None)
def action_feature_table(name: str) -> np.ndarray:
    """The table [n_actions, F] as float32 (read-only, built once per process)."""
    if name not in TABLES:
        raise ValueError(f"action feature table {name!r} is unknown; known: {', '.join(TABLES)}")
    table = np.ascontiguousarray(TABLES[name](), dtype=np.float32)
    table.setflags(write=False)
    return table
