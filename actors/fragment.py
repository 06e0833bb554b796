"""The arrays of one Fragment (T steps x E env copies; docs/ARCHITECTURE.md, Batches), filled as the
rollout goes: the actor writes each step's observations and the policy's decisions into row t, and
`record_outcomes` for what the environment answered. A new buffer per fragment, not one reused:
the fragment sent last may still be queued (actors/outbox.py) with its arrays as zero-copy frames."""
from __future__ import annotations

import numpy as np

from magicmask.protocol import messages as M
from magicmask.protocol.envspec import EnvSpec


class FragmentBuffer:
    """`arrays`: the wire arrays of the Fragment schema (its columns of one dtype as one block) and every
    column by name (`M.fragment_columns`: views into the blocks), which the rollout writes."""

    def __init__(self, spec: EnvSpec, T: int, E: int):
        self.T, self.E = T, E
        wire = {
            "obs": np.zeros((T, E, *spec.obs_shape), spec.obs_dtype),
            "actions": np.zeros((T, E), np.int64),
            "legal": np.zeros((T, E, spec.n_actions), bool),
            "floats": np.zeros((len(M.FRAGMENT_FLOATS), T, E), np.float32),
            "flags": np.zeros((len(M.FRAGMENT_FLAGS), T, E), bool),
            "boot": np.zeros((len(M.FRAGMENT_BOOT), E), np.float32),
        }
        self.arrays = {**wire, **M.fragment_columns(wire)}

    def record_outcomes(self, t: int, rewards, terminated, truncated) -> None:
        """What the environment answered at step t, for every copy ([E] values each)."""
        a = self.arrays
        a["rewards"][t], a["terminated"][t], a["truncated"][t] = rewards, terminated, truncated

    def record_final_values(self, t: int, c: int, value: float, mask_value: float) -> None:
        """Values of the real final observation of an episode cut off (truncated) at step t of copy c."""
        self.arrays["final_values"][t, c], self.arrays["final_mask_values"][t, c] = value, mask_value

    def bootstrap(self, value: np.ndarray, mask_value: np.ndarray) -> dict:
        """Close the fragment with the values of the observations after it; returns its arrays."""
        self.arrays["boot_values"][:], self.arrays["boot_mask_values"][:] = value, mask_value
        return self.arrays
