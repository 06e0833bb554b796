"""The arrays of one Fragment (T steps x E env copies; docs/ARCHITECTURE.md, Batches), filled as the
rollout goes: the actor writes each step's observations and the policy's decisions into row t, and
`record_outcomes` for what the environment answered. A new buffer per fragment, not one reused:
the fragment sent last may still be queued (actors/outbox.py) with its arrays as zero-copy frames."""
from __future__ import annotations

import numpy as np

from magicmask.protocol.envspec import EnvSpec

FLOATS = ("logp_mu", "logp_pi", "values", "mask_values", "rewards", "final_values", "final_mask_values", "m", "eps")
FLAGS = ("terminated", "truncated", "perturbed", "masked", "mask_applied", "eps_random", "guided")


class FragmentBuffer:
    def __init__(self, spec: EnvSpec, T: int, E: int):
        self.T, self.E = T, E
        self.arrays = {
            "obs": np.zeros((T, E, *spec.obs_shape), spec.obs_dtype),
            "actions": np.zeros((T, E), np.int64),
            "legal": np.zeros((T, E, spec.n_actions), bool),
            **{k: np.zeros((T, E), np.float32) for k in FLOATS},
            **{k: np.zeros((T, E), bool) for k in FLAGS},
        }

    def record_outcomes(self, t: int, rewards, terminated, truncated) -> None:
        """What the environment answered at step t, for every copy ([E] values each)."""
        a = self.arrays
        a["rewards"][t], a["terminated"][t], a["truncated"][t] = rewards, terminated, truncated

    def record_final_values(self, t: int, c: int, value: float, mask_value: float) -> None:
        """Values of the real final observation of an episode cut off (truncated) at step t of copy c."""
        self.arrays["final_values"][t, c], self.arrays["final_mask_values"][t, c] = value, mask_value

    def bootstrap(self, value: np.ndarray, mask_value: np.ndarray) -> dict:
        """Close the fragment with the values of the observations after it; returns its arrays."""
        self.arrays["boot_values"] = value.astype(np.float32)
        self.arrays["boot_mask_values"] = mask_value.astype(np.float32)
        return self.arrays
