"""The arrays of one Fragment (T steps x E env copies; docs/ARCHITECTURE.md, Batches), filled as the
rollout goes: one `record` per step for what the policy decided, one `record_outcome` per copy for what
the environment answered."""
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

    def record(self, t: int, step: dict) -> None:
        """Step t of every copy: each entry of `step` (a fragment array's name -> [E] values)."""
        for name, values in step.items():
            self.arrays[name][t] = values

    def record_outcome(self, t: int, c: int, reward: float, terminated: bool, truncated: bool) -> None:
        a = self.arrays
        a["rewards"][t, c], a["terminated"][t, c], a["truncated"][t, c] = reward, terminated, truncated

    def record_final_values(self, t: int, c: int, value: float, mask_value: float) -> None:
        """Values of the real final observation of an episode cut off (truncated) at step t of copy c."""
        self.arrays["final_values"][t, c], self.arrays["final_mask_values"][t, c] = value, mask_value

    def bootstrap(self, value: np.ndarray, mask_value: np.ndarray) -> dict:
        """Close the fragment with the values of the observations after it; returns its arrays."""
        self.arrays["boot_values"] = value.astype(np.float32)
        self.arrays["boot_mask_values"] = mask_value.astype(np.float32)
        return self.arrays
