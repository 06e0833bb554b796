"""`pong2`: PettingZoo's two-player Atari Pong (`pettingzoo.atari.pong_v3`, ROMs from ale-py's folder via
multi_agent_ale_py) where the two agents play each other: agent 0 is `first_0`, agent 1 `second_0`; the
other paddle is played by the opponent callback (the peer's latest weights). The same preprocessing as
`pong`, done here because PettingZoo's Parallel API has no gymnasium wrappers: grey frames, each joint
action repeated 4 times with the reward summed and the last two frames max-pooled, resized to 84x84
(INTER_AREA, as gymnasium's AtariPreprocessing), a 4-frame stack per seat. Observations (4, 84, 84) uint8.
"""
from __future__ import annotations

import os

import numpy as np

from magicmask.actors.envs.base import AgentEnv
from magicmask.protocol.config import ConfigError
from magicmask.protocol.envspec import EnvSpec

SEATS = ("first_0", "second_0")


class Pong2Env(AgentEnv):
    def __init__(self, agent_id: int, n_agents: int, max_episode_steps: int = 0, frame_skip: int = 4,
                 frame_stack: int = 4, max_cycles: int = 100_000):
        super().__init__(agent_id, max_episode_steps)
        if n_agents != 2:
            raise ConfigError(f"env pong2 is a two-player game: run.agents={n_agents}, allowed 2")
        import ale_py
        import cv2
        from pettingzoo.atari import pong_v3

        self._cv2 = cv2
        self.env = pong_v3.parallel_env(auto_rom_install_path=os.path.dirname(ale_py.__file__),
                                        obs_type="grayscale_image", max_cycles=max_cycles, render_mode="rgb_array")
        self.me, self.other = SEATS[agent_id], SEATS[1 - agent_id]
        self.skip, self.stack_n = frame_skip, frame_stack
        n = int(self.env.action_space(self.me).n)
        self.spec = EnvSpec(obs_shape=(frame_stack, 84, 84), obs_dtype="uint8", n_actions=n, n_agents=n_agents,
                            shared_world=True, name="pong2")
        self._legal = np.ones(n, bool)
        self._stacks: dict[str, np.ndarray] = {}
        self._score = 0.0

    def _frame(self, raw: np.ndarray) -> np.ndarray:
        return self._cv2.resize(raw.reshape(raw.shape[0], raw.shape[1]), (84, 84), interpolation=self._cv2.INTER_AREA)

    def _push(self, seat: str, frame: np.ndarray) -> np.ndarray:
        st = self._stacks[seat]
        st[:-1] = st[1:]
        st[-1] = frame
        return st.copy()

    def _reset(self, seed: int):
        obs, _ = self.env.reset(seed=seed)
        self._score = 0.0
        for seat in SEATS:
            f = self._frame(obs[seat])
            self._stacks[seat] = np.repeat(f[None], self.stack_n, axis=0)
        return self._stacks[self.me].copy(), self._legal, {}

    def _step(self, action: int):
        other = self._play_other(1 - self._agent_id, self._stacks[self.other].copy(), self._legal)
        reward, done, last = 0.0, False, {s: [] for s in SEATS}
        trunc = False
        for _ in range(self.skip):
            obs, rew, term, tr, _ = self.env.step({self.me: action, self.other: other})
            reward += float(rew.get(self.me, 0.0))
            for seat in SEATS:
                if seat in obs:
                    last[seat] = (last[seat] + [obs[seat]])[-2:]
            if any(term.values()) or any(tr.values()) or not self.env.agents:
                done, trunc = True, any(tr.values()) and not any(term.values())
                break
        for seat in SEATS:  # max-pool the last two frames (flicker), then resize and stack
            if last[seat]:
                self._push(seat, self._frame(np.maximum.reduce([f.astype(np.uint8) for f in last[seat]])))
        self._score += reward
        return self._stacks[self.me].copy(), self._legal, reward, done and not trunc, trunc, {}

    def _episode_stats(self, terminated: bool, truncated: bool) -> dict[str, float]:
        return {"score": self._score, "win": float(self._score > 0)}

    def render(self) -> np.ndarray | None:
        frame = self.env.render()
        return None if frame is None else np.asarray(frame, np.uint8)

    def close(self) -> None:
        self.env.close()
