"""`pong`: ALE Pong-v5 from ale-py's bundled ROMs, each agent in its own copies (as in the paper), with
the standard Atari preprocessing of gymnasium's wrappers: frameskip 4 done by AtariPreprocessing (the
base env runs frameskip 1), 84x84 grey frames, 4-frame stack, up to 30 no-op starts, and sticky actions
at ALE v5's default repeat_action_probability 0.25. Observations (4, 84, 84) uint8; 6 actions, all legal.
Episode stats: the final score difference and whether the agent won."""
from __future__ import annotations

import numpy as np

from magicmask.actors.envs.base import AgentEnv
from magicmask.protocol.envspec import EnvSpec


class PongEnv(AgentEnv):
    def __init__(self, agent_id: int, n_agents: int, max_episode_steps: int = 0, sticky: float = 0.25,
                 noop_max: int = 30, frame_stack: int = 4, full_action_space: bool = False):
        super().__init__(agent_id, max_episode_steps)
        import ale_py
        import gymnasium as gym
        from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

        gym.register_envs(ale_py)
        base = gym.make("ALE/Pong-v5", frameskip=1, repeat_action_probability=sticky,
                        full_action_space=full_action_space, render_mode="rgb_array")
        self.env = FrameStackObservation(
            AtariPreprocessing(base, noop_max=noop_max, frame_skip=4, screen_size=84, grayscale_obs=True), frame_stack)
        n = int(self.env.action_space.n)
        self.spec = EnvSpec(obs_shape=(frame_stack, 84, 84), obs_dtype="uint8", n_actions=n, n_agents=n_agents,
                            shared_world=False, name="pong")
        self._legal_all = np.ones(n, bool)
        self._score = 0.0

    def _reset(self, seed: int):
        obs, info = self.env.reset(seed=seed)
        self._score = 0.0
        return np.asarray(obs, np.uint8), self._legal_all, {}

    def _step(self, action: int):
        obs, r, term, trunc, info = self.env.step(action)
        self._score += float(r)
        return np.asarray(obs, np.uint8), self._legal_all, float(r), bool(term), bool(trunc), {}

    def _episode_stats(self, terminated: bool, truncated: bool) -> dict[str, float]:
        return {"score": self._score, "win": float(self._score > 0)}

    def render(self) -> np.ndarray | None:
        frame = self.env.unwrapped.render()
        return None if frame is None else np.asarray(frame, np.uint8)

    def close(self) -> None:
        self.env.close()
