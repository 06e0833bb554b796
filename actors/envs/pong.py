"""`pong`: Atari Pong (ALE Pong-v5), each agent in its own copies (as in the paper), with the standard Atari
preprocessing: frameskip 4 with the last two frames max-pooled, grey frames resized (INTER_AREA) to
`screen_size` x `screen_size` (84 by default; 42 for the CPU preset), a 4-frame stack, up to 30 no-op starts,
and sticky actions at ALE v5's default repeat_action_probability 0.25. Observations (4, S, S) uint8;
6 actions, all legal. Episode stats: the final score difference and whether the agent won.

Two backends give the same observations (tests/envs/test_pong_envpool.py steps both with the same actions):
- `ale`: ale-py through gymnasium's AtariPreprocessing and FrameStackObservation wrappers (~1,600 steps/s
  per core here).
- `envpool`: EnvPool's C++ Atari env with the same settings (1.25x the steps/s per core here;
  docs/BENCHMARKS.md). It seeds its generator only when it is built (~0.4 s), so with `replayable` (the
  default, and what the explanation always asks for: `make_env(..., replayable=True)`) every reset rebuilds it
  and the same seed replays the same episode, as the fidelity test needs; training actors build it once per
  copy and let later episodes continue its random stream (the run stays reproducible from run.seed).
  EnvPool draws 0..noop_max-1 no-ops where gymnasium draws 1..noop_max, and its frames differ from ale's in
  a few pixels (the test's bounds); its episodes are not bit-identical to ale's."""
from __future__ import annotations

import numpy as np

from magicmask.actors.envs.base import AgentEnv
from magicmask.protocol.config import ConfigError
from magicmask.protocol.envspec import EnvSpec

BACKENDS = ("ale", "envpool")
MAX_EPISODE_STEPS = 27_000   # ALE v5's 108,000 frames at frameskip 4


class PongEnv(AgentEnv):
    def __init__(self, agent_id: int, n_agents: int, max_episode_steps: int = 0, sticky: float = 0.25,
                 noop_max: int = 30, frame_stack: int = 4, full_action_space: bool = False,
                 screen_size: int = 84, backend: str = "ale", replayable: bool = True):
        super().__init__(agent_id, max_episode_steps)
        if backend not in BACKENDS:
            raise ConfigError(f"env.kwargs.backend={backend!r} for pong: allowed values are {', '.join(BACKENDS)}")
        if not 20 <= screen_size <= 210:
            raise ConfigError(f"env.kwargs.screen_size={screen_size} for pong: allowed 20..210")
        self.backend, self.screen_size, self.frame_stack = backend, int(screen_size), int(frame_stack)
        self.replayable = bool(replayable)
        self.overlaps_steps = backend == "envpool"   # each copy's EnvPool steps in a thread of its own
        self._opts = dict(sticky=float(sticky), noop_max=int(noop_max), full_action_space=bool(full_action_space))
        self.env = None
        self._seed = None   # envpool: the seed it was built with at the first reset
        n = self._build_ale() if backend == "ale" else self._build_envpool(0)
        self._seed = None
        self.spec = EnvSpec(obs_shape=(frame_stack, screen_size, screen_size), obs_dtype="uint8", n_actions=n,
                            n_agents=n_agents, shared_world=False, name="pong")
        self._legal_all = np.ones(n, bool)
        self._score = 0.0

    def _build_ale(self) -> int:
        import ale_py
        import gymnasium as gym
        from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

        gym.register_envs(ale_py)
        o = self._opts
        base = gym.make("ALE/Pong-v5", frameskip=1, repeat_action_probability=o["sticky"],
                        full_action_space=o["full_action_space"], render_mode="rgb_array")
        self.env = FrameStackObservation(
            AtariPreprocessing(base, noop_max=o["noop_max"], frame_skip=4, screen_size=self.screen_size,
                               grayscale_obs=True), self.frame_stack)
        return int(self.env.action_space.n)

    def _build_envpool(self, seed: int) -> int:
        try:
            import envpool
        except ImportError as e:
            raise ConfigError("env.kwargs.backend='envpool' needs the envpool package (pip install envpool, in "
                              "the project's atari extra)") from e
        if self.env is not None:
            self.env.close()
        o = self._opts
        self.env = envpool.make(
            "Pong-v5", env_type="gymnasium", num_envs=1, batch_size=1, num_threads=1, seed=int(seed) & 0x7FFFFFFF,
            img_height=self.screen_size, img_width=self.screen_size, stack_num=self.frame_stack, gray_scale=True,
            frame_skip=4, noop_max=max(1, o["noop_max"]),   # EnvPool draws 0..noop_max-1 no-ops; 0 crashes it
            repeat_action_probability=o["sticky"],
            full_action_space=o["full_action_space"], episodic_life=False, reward_clip=False,
            use_fire_reset=False, max_episode_steps=MAX_EPISODE_STEPS)
        self._seed = int(seed)
        self._act = np.zeros(1, np.int32)
        return int(self.env.action_space.n)

    def _reset(self, seed: int):
        self._score = 0.0
        if self.backend == "ale":
            obs, _ = self.env.reset(seed=seed)
            return np.asarray(obs, np.uint8), self._legal_all, {}
        if self.replayable or self._seed is None:
            self._build_envpool(seed)
        obs, _ = self.env.reset()
        return obs[0], self._legal_all, {}

    def _send(self, action: int) -> None:
        if self.backend == "envpool":
            self._act[0] = action
            self.env.send(self._act)

    def _recv(self, action: int):
        if self.backend == "ale":
            return self._step(action)
        obs, r, term, trunc, _ = self.env.recv()
        return self._outcome(obs[0], float(r[0]), bool(term[0]), bool(trunc[0]))

    def _step(self, action: int):
        """ale: one whole step; envpool steps through _send and _recv."""
        obs, r, term, trunc, _ = self.env.step(action)
        return self._outcome(np.asarray(obs, np.uint8), float(r), bool(term), bool(trunc))

    def _outcome(self, obs: np.ndarray, r: float, term: bool, trunc: bool):
        self._score += r
        return obs, self._legal_all, r, term, trunc, {}

    def _episode_stats(self, terminated: bool, truncated: bool) -> dict[str, float]:
        return {"score": self._score, "win": float(self._score > 0)}

    def render(self) -> np.ndarray | None:
        if self.backend == "ale":
            frame = self.env.unwrapped.render()
            return None if frame is None else np.asarray(frame, np.uint8)
        return None   # EnvPool keeps no screen: the report shows the observation frames instead

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
