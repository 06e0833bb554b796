"""Any PettingZoo env (AEC or Parallel), loaded by import path 'package.module:factory', as one agent's stream.

Actor agent i controls seat `possible_agents[i % n_seats]`; every other seat is played by the opponent
callback with the seat's index as its agent id. Observations: the dict's "observation" (and its
"action_mask" as the legal set) when the env gives one, else the observation itself; always flattened
to float32. Only Discrete action spaces are supported. The reward is the agent's reward accumulated
between two of its decisions (what `env.last()` reports to it in AEC order).
"""
from __future__ import annotations

import importlib
import math

import gymnasium
import numpy as np

from magicmask.actors.envs.base import AgentEnv
from magicmask.protocol.config import ConfigError
from magicmask.protocol.envspec import EnvSpec


def load_factory(path: str):
    """'package.module:factory' -> the callable; a ConfigError names the path and the import error."""
    if ":" not in path:
        raise ConfigError(f"env.name={path!r}: expected 'package.module:factory'")
    mod_name, attr = path.split(":", 1)
    try:
        mod = importlib.import_module(mod_name)
    except Exception as e:  # ImportError, or anything the module raises while importing
        raise ConfigError(f"env.name={path!r}: cannot import module {mod_name!r}: {type(e).__name__}: {e}") from e
    if not hasattr(mod, attr):
        raise ConfigError(f"env.name={path!r}: module {mod_name!r} has no attribute {attr!r}")
    fn = getattr(mod, attr)
    if not callable(fn):
        raise ConfigError(f"env.name={path!r}: {attr!r} in {mod_name!r} is not callable")
    return fn


def _obs_space_shape(space) -> tuple[int, ...]:
    """Shape of the observation array inside a space (the "observation" entry of a Dict space)."""
    try:
        if hasattr(space, "spaces") and isinstance(space.spaces, dict) and "observation" in space.spaces:
            space = space.spaces["observation"]
    except TypeError:
        pass
    return tuple(space.shape) if space.shape is not None else ()


def split_obs(raw, n_actions: int, info_mask=None) -> tuple[np.ndarray, np.ndarray]:
    """A PettingZoo observation -> (flat float32 obs, bool legal[n_actions])."""
    mask = None
    if isinstance(raw, dict) and "observation" in raw:
        mask = raw.get("action_mask")
        raw = raw["observation"]
    if mask is None:
        mask = info_mask
    obs = np.asarray(raw, dtype=np.float32).reshape(-1)
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
        shape = _obs_space_shape(env.observation_space(self.seat))
        self.spec = EnvSpec(obs_shape=(max(1, math.prod(shape)),), obs_dtype="float32",
                            n_actions=self.n_act[self.seat], n_agents=int(n_agents), shared_world=True, name=name)

    def _convert(self, seat: str, raw, info=None) -> tuple[np.ndarray, np.ndarray]:
        info_mask = info.get("action_mask") if isinstance(info, dict) else None
        obs, legal = split_obs(raw, self.n_act[seat], info_mask)
        if seat == self.seat and obs.shape != self.spec.obs_shape:
            raise ValueError(f"env {self.spec.name!r}: observation of seat {seat!r} has {obs.size} values, "
                             f"the spec says {self.spec.obs_shape}")
        return obs, legal

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
    """A PettingZoo AEC env: after our action, other seats move (via the callback) until our turn or the end."""

    def _reset(self, seed: int):
        self.env.reset(seed=seed)
        self._reward_acc = 0.0
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
                obs = np.zeros(self.spec.obs_shape, np.float32)
                legal = np.ones(self.spec.n_actions, bool)
                term, trunc = True, False
                break
            sel = env.agent_selection
            if sel == me:
                reward += float(env._cumulative_rewards.get(me, 0.0))
                env._cumulative_rewards[me] = 0   # consumed: the next read is what accrues from now on
                term, trunc = bool(env.terminations[me]), bool(env.truncations[me])
                obs, legal = self._convert(me, env.observe(me), env.infos.get(me))
                if term or trunc:
                    legal = self._final_legal(legal)
                break
            if env.terminations[sel] or env.truncations[sel]:
                env.step(None)
                continue
            o, lg = self._convert(sel, env.observe(sel), env.infos.get(sel))
            a = self._other_action(sel, o, lg)
            env.step(a + self.act_start[sel])
        self._last_reward = reward
        if first:
            return obs, legal, {}
        return obs, legal, reward, term, trunc, {}


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
        if me not in obs:   # our seat left the game without a flag: it is over for us
            term = term or not trunc
            return np.zeros(self.spec.obs_shape, np.float32), np.ones(self.spec.n_actions, bool), reward, term, trunc, {}
        o, lg = self._convert(me, obs[me], self._infos.get(me))
        if not env.agents and not (term or trunc):
            term = True   # everyone is gone: the game ended
        if term or trunc:
            lg = self._final_legal(lg)
        return o, lg, reward, term, trunc, {}


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
