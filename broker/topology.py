"""Who sees whose critical states: receiver -> set of sources, for the broker's per-receiver snapshots.

Every receiver always sees itself (its own reports are in the shared buffer anyway, and the actor tells
its own finds from peers' by the finder bits). Random topologies are drawn once from `comm.seed`, so two
processes or two runs with the same config agree.
"""
from __future__ import annotations

import numpy as np


def neighbours(cfg_comm, n_agents: int) -> dict[int, set[int]]:
    """The topology named by `cfg_comm.topology` for agents 0..n_agents-1."""
    n = int(n_agents)
    everyone = set(range(n))
    kind = cfg_comm.topology
    if kind == "full":
        return {r: set(everyone) for r in range(n)}
    if kind == "ring":
        return {r: {(r - 1) % n, r, (r + 1) % n} for r in range(n)}
    if kind == "star":  # agent 0 is the hub
        return {r: set(everyone) if r == 0 else {0, r} for r in range(n)}
    if kind == "random-k":
        rng = np.random.default_rng(cfg_comm.seed)
        k = min(int(cfg_comm.random_k), n - 1)
        out = {}
        for r in range(n):
            others = [a for a in range(n) if a != r]
            picked = rng.choice(others, size=k, replace=False) if k > 0 else []
            out[r] = {r, *map(int, picked)}
        return out
    if kind == "explicit":
        out = {r: {r} for r in range(n)}
        for r, srcs in (cfg_comm.adjacency or {}).items():
            r = int(r)  # YAML may give receiver keys as strings of ints
            if not 0 <= r < n:
                raise ValueError(f"comm.adjacency: receiver {r} is not an agent id in 0..{n - 1}")
            for s in srcs if isinstance(srcs, (list, tuple, set)) else [srcs]:
                s = int(s)
                if not 0 <= s < n:
                    raise ValueError(f"comm.adjacency[{r}]: source {s} is not an agent id in 0..{n - 1}")
                out[r].add(s)
        return out
    raise ValueError(f"comm.topology={kind!r}: allowed full, ring, star, random-k, explicit")
