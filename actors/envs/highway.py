"""`highway`: highway-env with one controlled vehicle per agent, as one agent's decision stream.

Every actor runs its own copies of the whole world: N controlled vehicles (N = the run's agents) among
highway-env's IDM traffic. The actor's agent drives vehicle `agent_id`; every other controlled vehicle j
is driven by the opponent callback fn(j, obs_j, legal_j) (peer j's policy, inference only), or uniform
random when no callback is set. Actions are highway-env's `DiscreteMetaAction` (0 LANE_LEFT, 1 IDLE,
2 LANE_RIGHT, 3 FASTER, 4 SLOWER), all legal (highway-env accepts every action; with `legal_mask=True`
the legal set is highway-env's `get_available_actions` of that vehicle). Observations are highway-env's
Kinematics observation of the vehicle (5 vehicles x presence, x, y, vx, vy; own car in row 0, the others
relative and normalised), flattened to 25 float32.

Reward and termination are per vehicle: the agent's reward is highway-env's own `_reward` computed with
its vehicle as the ego (highway-v0's reward, termination and info describe controlled vehicle 0 only), and
its episode terminates when its own vehicle crashes; it is truncated at the env's `duration`. A crashed
controlled vehicle stops acting (its action is IDLE, and highway-env brakes it to a stop); the others go on.

Speed. highway-fast-v0 with 4 controlled vehicles runs ~20 steps/s on one core: about half in its
pandas Kinematics observation, half in pure-Python simulation (`Road.neighbour_vehicles` projecting every
vehicle on a lane for every query, `np.clip` on scalars, collision checks of every pair). This adapter
keeps highway-env's dynamics bit for bit (tests/envs/test_highway.py steps it in lockstep with the unmodified
env and compares every vehicle's state exactly) but:
- builds the Kinematics observation with numpy (same values as highway-env's own),
- never computes `info` or observations it does not need, and renders only when `render()` is asked,
- swaps the classes of the scene's objects for subclasses whose hot methods give the same floats faster:
  straight lanes along +x compute local coordinates without `np.dot`, the network finds the closest lane
  without numpy, the road answers neighbour queries from per-lane lists built once per simulation frame
  and skips collision pairs that cannot touch, and vehicles clip scalars with min/max instead of np.clip.
  Every transcendental function stays the numpy call highway-env makes, on the same inputs.
  Anything outside these cases (other lane shapes, obstacles, other observation settings) falls back
  to highway-env's own code.

Modules: this adapter; `highway_world.py` the scene and its per-vehicle rewards and termination;
`highway_obs.py` the numpy Kinematics observation; `highway_fast.py` the fast scene classes.
"""
from __future__ import annotations

import numpy as np

from magicmask.actors.envs.base import AgentEnv, TeamWorld
from magicmask.actors.envs.highway_obs import OBS_COLS, OBS_ROWS
from magicmask.actors.envs.highway_world import IDLE, N_ACTIONS, HighwayWorld
from magicmask.protocol.envspec import EnvSpec


class HighwayAgentEnv(AgentEnv, TeamWorld):
    """highway-env for one agent: it drives controlled vehicle `agent_id` of n_agents; the other controlled
    vehicles are driven by the opponent callback (peers' policies) or uniformly at random. As a TeamWorld
    it steps every controlled vehicle with the given actions (the fidelity test's team window)."""

    def __init__(self, agent_id: int = 0, n_agents: int = 4, env_id: str = "highway-fast-v0",
                 config: dict | None = None, legal_mask: bool = False, max_episode_steps: int = 0):
        n_agents = int(n_agents)
        if n_agents < 1:
            raise ValueError(f"highway: n_agents={n_agents} must be >= 1 (one controlled vehicle per agent)")
        if not 0 <= int(agent_id) < n_agents:
            raise ValueError(f"highway: agent_id={agent_id} must be in 0..{n_agents - 1}")
        if config is not None and not isinstance(config, dict):
            raise ValueError(f"highway: config must be a mapping of highway-env settings, got {config!r}")
        super().__init__(agent_id, max_episode_steps)
        self.n_agents = n_agents
        self.legal_mask = bool(legal_mask)
        self.world = HighwayWorld(n_agents, env_id, config)
        self.spec = EnvSpec(obs_shape=(OBS_ROWS * OBS_COLS,), obs_dtype="float32", n_actions=N_ACTIONS,
                            n_agents=n_agents, shared_world=n_agents > 1, name="highway")
        self._all_legal = np.ones(N_ACTIONS, bool)
        self._obs: dict[int, np.ndarray] = {}
        self._stats = {}

    def _legal_of(self, i: int) -> np.ndarray:
        return self.world.available_actions(i) if self.legal_mask else self._all_legal.copy()

    def _observe(self) -> None:
        w, me = self.world, self.agent_id
        crashed = w.crashed()
        live = [i for i in range(self.n_agents) if i == me or not crashed[i]]
        self._obs = {i: o.reshape(-1) for i, o in w.observations(live).items()}

    def _reset(self, seed: int):
        self.world.reset(seed)
        self._observe()
        self._stats = {"return": 0.0, "speed": 0.0, "steps": 0}
        me = self.agent_id
        return self._obs[me].copy(), self._legal_of(me), {}

    def _step(self, action: int):
        w, me = self.world, self.agent_id
        crashed = w.crashed()
        actions = [IDLE] * self.n_agents
        actions[me] = action
        for j in range(self.n_agents):
            if j != me and not crashed[j]:
                actions[j] = self._play_other(j, self._obs[j], self._legal_of(j))
        w.step(actions)
        reward = w.reward(me, action)
        term, trunc = w.terminated(me), w.truncated()
        if term or trunc:
            self._obs = {me: w.observations([me])[me].reshape(-1)}
        else:
            self._observe()
        v = w.vehicles[me]
        st = self._stats
        st["return"] += reward
        st["speed"] += float(v.speed)
        st["steps"] += 1
        info = {"crashed": bool(v.crashed), "speed": float(v.speed)}
        return self._obs[me].copy(), self._legal_of(me), reward, term, trunc, info

    def _episode_stats(self, terminated: bool, truncated: bool) -> dict[str, float]:
        st, crashed = self._stats, self.world.crashed()
        others = [c for j, c in enumerate(crashed) if j != self.agent_id]
        return {"crashed": float(crashed[self.agent_id]), "mean_speed": st["speed"] / max(st["steps"], 1),
                "peers_crashed": float(np.mean(others)) if others else 0.0}

    # -------- TeamWorld: every vehicle's action given, every vehicle's reward --------
    def team_reset(self, seed: int):
        self.world.reset(int(seed))
        self._done = True                  # the agent's own stream must be reset before it steps again
        self._team_t = 0
        self._team_active = np.ones(self.n_agents, bool)
        obs = self.world.observations(list(range(self.n_agents)))
        self._team_obs = [obs[i].reshape(-1) for i in range(self.n_agents)]
        return [o.copy() for o in self._team_obs], [self._legal_of(i) for i in range(self.n_agents)]

    def team_step(self, actions):
        w, n, was = self.world, self.n_agents, self._team_active
        if len(actions) != n:
            raise ValueError(f"highway.team_step: {len(actions)} actions for {n} vehicles")
        acts = [int(a) if was[i] else IDLE for i, a in enumerate(actions)]
        w.step(acts)
        self._team_t += 1
        rewards = np.array([w.reward(i, acts[i]) if was[i] else 0.0 for i in range(n)], np.float32)
        active = was & ~np.array([w.terminated(i) for i in range(n)])
        done = (not active.any()) or w.truncated() or bool(self.max_episode_steps and self._team_t >= self.max_episode_steps)
        live = [i for i in range(n) if active[i]]
        if live and not done:
            for i, o in w.observations(live).items():
                self._team_obs[i] = o.reshape(-1)
        self._team_active = active
        return [o.copy() for o in self._team_obs], [self._legal_of(i) for i in range(n)], rewards, active.copy(), bool(done)

    def team_stats(self) -> dict[str, float]:
        """The share of the team's vehicles that crashed in the last team episode."""
        return {"crashed": float(np.mean(self.world.crashed()))}

    def render(self) -> np.ndarray:
        """highway-env's own rgb_array frame centred on this agent's vehicle (uint8, H x W x 3)."""
        return self.world.render(self.agent_id)

    def close(self) -> None:
        self.world.close()
