"""State keys: every agent maps observations to keys with the same seeded random projection, so that keys
from different agents and processes live in one space and can be compared by cosine similarity (the
broker merges near-duplicates; actors skip perturbation of states peers marked critical)."""
from __future__ import annotations

import numpy as np


class StateKeys:
    def __init__(self, obs_dim: int, key_dim: int, seed: int):
        rng = np.random.default_rng(seed)
        # Gaussian projection: preserves cosine similarity approximately (Johnson-Lindenstrauss).
        self.proj = (rng.standard_normal((obs_dim, key_dim)) / np.sqrt(key_dim)).astype(np.float32)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """obs[B, *obs_shape] -> unit keys[B, key_dim] (a zero observation maps to a zero key)."""
        flat = obs.reshape(obs.shape[0], -1).astype(np.float32, copy=False)
        keys = flat @ self.proj
        # the sum np.linalg.norm computes, without its Python-side dispatch (a third of this call at B = 4)
        norms = np.sqrt(np.add.reduce(keys * keys, axis=1, keepdims=True))
        keys /= np.maximum(norms, 1e-8)
        return keys


def max_cosine(keys: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """Highest cosine similarity of each key to any key of the bank (-1 for an empty bank)."""
    return best_match(keys, bank)[0]


def best_match(keys: np.ndarray, bank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(highest cosine similarity, index of that bank key) for each key; (-1, 0) for an empty bank."""
    if bank.shape[0] == 0:
        return np.full(keys.shape[0], -1.0, np.float32), np.zeros(keys.shape[0], np.int64)
    sims = keys @ bank.T
    idx = sims.argmax(axis=1)
    return sims[np.arange(len(keys)), idx], idx
