"""Any PettingZoo env (AEC or Parallel), loaded by import path 'package.module:factory', as one agent's stream.

Actor agent i controls seat `possible_agents[i % n_seats]`; every other seat is played by the opponent
callback with the seat's index as its agent id. Observations: the dict's "observation" (and its
"action_mask" as the legal set) when the env gives one, else the observation itself. Images (a uint8 Box
(H, W, C) with C in 1, 3, 4 and bounds 0..255, the rule Stable-Baselines3 uses) are given channels first,
(C, H, W) uint8, which the networks read with the CNN (models/networks.py); anything else is flattened to
float32. Only Discrete action spaces are supported. The reward is the agent's reward accumulated
between two of its decisions (what `env.last()` reports to it in AEC order).
"""
from __future__ import annotations

import math

import gymnasium
import numpy as np

from magicmask.actors.envs.base import AgentEnv
from magicmask.protocol.config import ConfigError
from magicmask.protocol.envspec import EnvSpec
from magicmask.protocol.import_path import load_callable


def load_factory(path: str):
    """'package.module:factory' (env.name) -> the callable, or a ConfigError saying why not."""
    return load_callable(path, "env.name")


def _obs_space(space):
    """The space of the observation array (the "observation" entry of a Dict space)."""
    try:
        if hasattr(space, "spaces") and isinstance(space.spaces, dict) and "observation" in space.spaces:
            return space.spaces["observation"]
    except TypeError:
        pass
    return space


def image_shape(space) -> tuple[int, int, int] | None:
    """(C, H, W) when the observation space holds channels-last images (module docstring), else None."""
    space = _obs_space(space)
    if not isinstance(space, gymnasium.spaces.Box) or space.dtype != np.uint8 or len(space.shape) != 3:
        return None
    h, w, c = space.shape
    if c not in (1, 3, 4) or not (np.all(space.low == 0) and np.all(space.high == 255)):
        return None
    return c, h, w


def split_obs(raw, n_actions: int, info_mask=None, image: tuple[int, int, int] | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """A PettingZoo observation -> (obs, bool legal[n_actions]): flat float32, or with `image` = (C, H, W)
    (`image_shape` of the space) the image channels first, uint8."""
    mask = None
    if isinstance(raw, dict) and "observation" in raw:
        mask = raw.get("action_mask")
        raw = raw["observation"]
    if mask is None:
        mask = info_mask
    if image is None:
        obs = np.asarray(raw, dtype=np.float32).reshape(-1)
    else:
        c, h, w = image
        obs = np.ascontiguousarray(np.asarray(raw, np.uint8).reshape(h, w, c).transpose(2, 0, 1))
    if mask is None:
        legal = np.ones(n_actions, bool)
    else:
        legal = np.asarray(mask).astype(bool).reshape(-1)
    return obs, legal


class _PettingZooBase(AgentEnv):
    """What the AEC and Parallel adapters share: seats, spaces, spec, observation conversion."""

    def __init__(self, env, agent_id: int, n_agents: int, name: str, max_episode_steps: int = 0, seat: str | None = None):
        super().__init__(agent_id, max_episode_steps)
        self.env = env
        self.seats = list(env.possible_agents)
        if not self.seats:
            raise ConfigError(f"env {name!r}: possible_agents is empty")
        self.seat = seat if seat is not None else self.seats[agent_id % len(self.seats)]
        self.seat_index = {s: i for i, s in enumerate(self.seats)}
        self.n_act, self.act_start = {}, {}
        for s in self.seats:
            sp = env.action_space(s)
            if not isinstance(sp, gymnasium.spaces.Discrete):
                raise ConfigError(f"env {name!r}: seat {s!r} has action space {sp}; only Discrete action spaces "
                                  f"are supported")
            self.n_act[s], self.act_start[s] = int(sp.n), int(getattr(sp, "start", 0))
        self._images = {s: image_shape(env.observation_space(s)) for s in self.seats}
        mine = self._images[self.seat]
        raw_shape = tuple(_obs_space(env.observation_space(self.seat)).shape or ())
        shape = mine or (max(1, math.prod(raw_shape)),)
        board = raw_shape if not mine and len(raw_shape) == 3 else ()   # a board game's (H, W, C) planes
        self.spec = EnvSpec(obs_shape=shape, obs_dtype="uint8" if mine else "float32",
                            n_actions=self.n_act[self.seat], n_agents=int(n_agents), shared_world=True, name=name,
                            board_shape=board)
        self._reports_critical = False

    def _convert(self, seat: str, raw, info=None) -> tuple[np.ndarray, np.ndarray]:
        info_mask = info.get("action_mask") if isinstance(info, dict) else None
        obs, legal = split_obs(raw, self.n_act[seat], info_mask, self._images[seat])
        if seat == self.seat and obs.shape != self.spec.obs_shape:
            raise ValueError(f"env {self.spec.name!r}: observation of seat {seat!r} has shape {obs.shape}, "
                             f"the spec says {self.spec.obs_shape}")
        return obs, legal

    def _step_info(self, info) -> dict:
        """The info of our step: `critical` passed through when the env reports it (ground truth, as gates'
        info["critical"]). Once an env has reported it, a step without the flag (e.g. the seat left the game
        with no info) counts as not critical, so an episode's ground truth is never left with holes."""
        crit = info.get("critical") if isinstance(info, dict) else None
        if crit is not None:
            self._reports_critical = True
            return {"critical": bool(crit)}
        return {"critical": False} if self._reports_critical else {}

    def _blank_obs(self) -> np.ndarray:
        """The observation after our seat left the game without one to see."""
        return np.zeros(self.spec.obs_shape, self.spec.obs_dtype)

    def render(self) -> np.ndarray | None:
        if getattr(self.env, "render_mode", None) != "rgb_array":
            return None
        frame = self.env.render()
        if isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[2] == 3:
            return np.ascontiguousarray(frame, dtype=np.uint8)
        return None

    def close(self) -> None:
        try:
            self.env.close()
        except Exception:
            pass

    @staticmethod
    def _final_legal(legal: np.ndarray) -> np.ndarray:
        # no legal move at the end of the game: mark all legal so downstream softmaxes stay finite
        return legal if legal.any() else np.ones_like(legal)


class AECAdapter(_PettingZooBase):
    """A PettingZoo AEC env: after our action, other seats move (via the callback) until our turn or the end.
    Our step's info is `env.infos[our seat]` when we next look (our turn, or the end): an AEC env may finish a
    round's transition only after every seat moved (PettingZoo's parallel_to_aec does)."""

    def _reset(self, seed: int):
        self.env.reset(seed=seed)
        return self._advance(first=True)

    def _step(self, action: int):
        self.env.step(action + self.act_start[self.seat])
        return self._advance(first=False)

    def _other_action(self, seat: str, obs: np.ndarray, legal: np.ndarray) -> int:
        return self._play_other(self.seat_index[seat], obs, legal)

    def _advance(self, first: bool):
        env, me = self.env, self.seat
        reward = 0.0
        while True:
            if me not in env.agents:   # removed without a turn to see it: the episode is over for us
                info = env.infos.get(me)
                obs = self._blank_obs()
                legal = np.ones(self.spec.n_actions, bool)
                term, trunc = True, False
                break
            sel = env.agent_selection
            if sel == me:
                reward += float(env._cumulative_rewards.get(me, 0.0))
                env._cumulative_rewards[me] = 0   # consumed: the next read is what accrues from now on
                term, trunc = bool(env.terminations[me]), bool(env.truncations[me])
                info = env.infos.get(me)
                obs, legal = self._convert(me, env.observe(me), info)
                if term or trunc:
                    legal = self._final_legal(legal)
                break
            if env.terminations[sel] or env.truncations[sel]:
                env.step(None)
                continue
            o, lg = self._convert(sel, env.observe(sel), env.infos.get(sel))
            a = self._other_action(sel, o, lg)
            env.step(a + self.act_start[sel])
        if first:
            return obs, legal, {}
        return obs, legal, reward, term, trunc, self._step_info(info)


class ParallelAdapter(_PettingZooBase):
    """A PettingZoo Parallel env: each step, our action plus the callback's for every other live seat."""

    def _reset(self, seed: int):
        obs, infos = self.env.reset(seed=seed)
        self._obs, self._infos = obs, infos or {}
        o, lg = self._convert(self.seat, obs[self.seat], self._infos.get(self.seat))
        return o, lg, {}

    def _step(self, action: int):
        env = self.env
        actions = {self.seat: action + self.act_start[self.seat]}
        for s in env.agents:
            if s != self.seat:
                o, lg = self._convert(s, self._obs[s], self._infos.get(s))
                actions[s] = self._play_other(self.seat_index[s], o, lg) + self.act_start[s]
        obs, rewards, terms, truncs, infos = env.step(actions)
        self._obs, self._infos = obs, infos or {}
        me = self.seat
        reward = float(rewards.get(me, 0.0))
        term, trunc = bool(terms.get(me, False)), bool(truncs.get(me, False))
        info = self._step_info(self._infos.get(me))
        if me not in obs:   # our seat left the game without a flag: it is over for us
            term = term or not trunc
            return self._blank_obs(), np.ones(self.spec.n_actions, bool), reward, term, trunc, info
        o, lg = self._convert(me, obs[me], self._infos.get(me))
        if not env.agents and not (term or trunc):
            term = True   # everyone is gone: the game ended
        if term or trunc:
            lg = self._final_legal(lg)
        return o, lg, reward, term, trunc, info


def _is_parallel(env) -> bool:
    from pettingzoo.utils.env import AECEnv, ParallelEnv
    if isinstance(env, ParallelEnv):
        return True
    if isinstance(env, AECEnv):
        return False
    # unwrapped duck typing: AEC envs have agent_selection / last, Parallel envs do not
    return not (hasattr(env, "agent_selection") or hasattr(env, "last"))


def make_pettingzoo(path: str, agent_id: int, n_agents: int, kwargs: dict, max_episode_steps: int = 0) -> AgentEnv:
    """Build the env from its factory (called with kwargs) and wrap it in the right adapter."""
    factory = load_factory(path)
    try:
        env = factory(**kwargs)
    except TypeError as e:
        raise ConfigError(f"env.name={path!r}: the factory does not accept env.kwargs={kwargs!r}: {e}") from e
    if not hasattr(env, "possible_agents"):
        raise ConfigError(f"env.name={path!r}: the factory returned {type(env).__name__}, not a PettingZoo "
                          f"AEC or Parallel env (no possible_agents)")
    cls = ParallelAdapter if _is_parallel(env) else AECAdapter
    return cls(env, agent_id, n_agents, name=path, max_episode_steps=max_episode_steps)
