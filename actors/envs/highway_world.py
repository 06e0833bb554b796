"""One highway-env scene with N controlled vehicles (one per agent), stepped without the observation and info
work highway-env does on every step; each vehicle's observation, reward and termination are asked for
separately. The scene is accelerated (actors/envs/highway_fast.py) and observed with numpy
(actors/envs/highway_obs.py); both give highway-env's own values."""
from __future__ import annotations

import os

import numpy as np

from magicmask.actors.envs.highway_obs import numpy_observations, numpy_observations_apply, reference_observation

N_ACTIONS = 5   # DiscreteMetaAction: 0 LANE_LEFT, 1 IDLE, 2 LANE_RIGHT, 3 FASTER, 4 SLOWER
IDLE = 1
ENV_IDS = ("highway-fast-v0", "highway-v0")
_ENV_CLASSES: dict[str, type] = {}


def _env_class(env_id: str) -> type:
    """highway-env's class for env_id with `_reset` accelerating the scene it builds."""
    if env_id not in _ENV_CLASSES:
        if env_id not in ENV_IDS:
            raise ValueError(f"highway: env_id={env_id!r} must be one of {', '.join(ENV_IDS)}")
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        from highway_env.envs.highway_env import HighwayEnv, HighwayEnvFast

        from magicmask.actors.envs.highway_fast import accelerate_scene
        base = HighwayEnvFast if env_id == "highway-fast-v0" else HighwayEnv

        class Accelerated(base):
            def _reset(self):
                super()._reset()
                self.fast_scene = accelerate_scene(self)

        Accelerated.__name__ = Accelerated.__qualname__ = f"Accelerated{base.__name__}"
        _ENV_CLASSES[env_id] = Accelerated
    return _ENV_CLASSES[env_id]


def multiagent_config(n_vehicles: int, extra: dict | None = None) -> dict:
    """highway-env config for n controlled vehicles, each with its own Kinematics observation and
    DiscreteMetaAction (what MultiAgentObservation / MultiAgentAction give)."""
    cfg = {"controlled_vehicles": int(n_vehicles),
           "observation": {"type": "MultiAgentObservation", "observation_config": {"type": "Kinematics"}},
           "action": {"type": "MultiAgentAction", "action_config": {"type": "DiscreteMetaAction"}}}
    for k, v in (extra or {}).items():
        if k in ("controlled_vehicles", "observation", "action"):
            raise ValueError(f"highway: config[{k!r}] is set by the adapter (one vehicle per agent, "
                             f"Kinematics, DiscreteMetaAction)")
        cfg[k] = v
    return cfg


class HighwayWorld:
    """One highway-env scene with n controlled vehicles. `step` takes one action per controlled vehicle
    and runs highway-env's own simulation; observations, rewards and termination are asked per vehicle."""

    def __init__(self, n_vehicles: int, env_id: str = "highway-fast-v0", config: dict | None = None):
        import gymnasium
        self.n = int(n_vehicles)
        self.env = _env_class(env_id)(config=multiagent_config(self.n, config), render_mode="rgb_array")
        self._gym_reset = gymnasium.Env.reset
        self._kin_fast = False

    # -------- running --------
    def reset(self, seed: int) -> None:
        """AbstractEnv.reset less its observation and info."""
        u = self.env
        self._gym_reset(u, seed=int(seed))
        u.update_metadata()
        u.define_spaces()
        u.time = u.steps = 0
        u.done = False
        u._reset()
        if u.road is not None:
            u.road.neighbour_vehicles_connected_lanes = u.config["neighbour_vehicles_connected_lanes"]
        u.define_spaces()
        self._kin_fast = numpy_observations_apply(u)

    def step(self, actions) -> None:
        """AbstractEnv.step less its observation, reward and info."""
        u = self.env
        u.time += 1 / u.config["policy_frequency"]
        u._simulate(tuple(int(a) for a in actions))

    @property
    def vehicles(self):
        return self.env.controlled_vehicles

    def crashed(self) -> list[bool]:
        return [bool(v.crashed) for v in self.env.controlled_vehicles]

    def terminated(self, i: int) -> bool:
        """HighwayEnv._is_terminated for vehicle i."""
        v = self.env.controlled_vehicles[i]
        return bool(v.crashed or (self.env.config["offroad_terminal"] and not v.on_road))

    def truncated(self) -> bool:
        return bool(self.env._is_truncated())

    def reward(self, i: int, action: int = IDLE) -> float:
        """highway-env's own reward for controlled vehicle i: `_reward` with vehicle i moved to the front
        of `controlled_vehicles` (it reads `self.vehicle`, the first), then the list restored."""
        u = self.env
        cv = u.controlled_vehicles
        if i == 0:
            return float(u._reward(action))
        u.controlled_vehicles = [cv[i]] + [v for k, v in enumerate(cv) if k != i]
        try:
            return float(u._reward(action))
        finally:
            u.controlled_vehicles = cv

    def available_actions(self, i: int) -> np.ndarray:
        legal = np.zeros(N_ACTIONS, bool)
        legal[self.env.action_type.agents_action_types[i].get_available_actions()] = True
        return legal

    # -------- observations --------
    def reference_observation(self, i: int) -> np.ndarray:
        """highway-env's own (pandas) Kinematics observation of controlled vehicle i."""
        return reference_observation(self.env, i)

    def observations(self, which) -> dict[int, np.ndarray]:
        """Kinematics observations (5, 5) float32 of the controlled vehicles in `which`: built with numpy
        where that applies (the same values), else highway-env's own."""
        which = list(which)
        if not which:
            return {}
        if not self._kin_fast:
            return {i: self.reference_observation(i) for i in which}
        return numpy_observations(self.env, which)

    def render(self, observer: int | None = None) -> np.ndarray:
        """highway-env's rgb_array frame (offscreen, SDL dummy driver), centred on `observer`'s vehicle."""
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
        u = self.env
        if u.viewer is None:
            from highway_env.envs.common.graphics import EnvViewer
            u.viewer = EnvViewer(u)
            # EnvViewer disables itself under SDL's dummy driver, but offscreen drawing (onto a Surface,
            # never a window: config offscreen_rendering is True for rgb_array) needs no display
            u.viewer.enabled = bool(u.viewer.offscreen) or u.viewer.enabled
        u.viewer.observer_vehicle = u.controlled_vehicles[observer] if observer is not None else None
        frame = u.render()
        u.enable_auto_render = False   # or _simulate would draw every intermediate frame from now on
        return np.ascontiguousarray(frame, dtype=np.uint8)

    def close(self) -> None:
        self.env.close()
