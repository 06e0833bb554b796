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
keeps highway-env's dynamics bit for bit (tests/test_highway.py steps it in lockstep with the unmodified
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
"""
from __future__ import annotations

import os

import numpy as np

from magicmask.actors.envs.base import AgentEnv, TeamWorld
from magicmask.protocol.envspec import EnvSpec

N_ACTIONS = 5
IDLE = 1
OBS_ROWS, OBS_COLS = 5, 5
_DEFAULT_KINEMATICS = {"type": "Kinematics"}


# ---------------------------------------------------------------------------------------------------------
# Fast, exact subclasses of highway-env's scene objects (installed by swapping __class__ on instances).
# ---------------------------------------------------------------------------------------------------------
def _fast_classes():
    """Built lazily so that importing this module does not import highway-env."""
    global _FAST
    if _FAST is not None:
        return _FAST
    from highway_env import utils
    from highway_env.road.lane import StraightLane
    from highway_env.road.road import Road, RoadNetwork
    from highway_env.vehicle.behavior import IDMVehicle
    from highway_env.vehicle.controller import ControlledVehicle, MDPVehicle
    from highway_env.vehicle.kinematics import Vehicle

    not_zero, wrap_to_pi = utils.not_zero, utils.wrap_to_pi
    np_arcsin, np_arctan, np_tan, np_power, np_pi = np.arcsin, np.arctan, np.tan, np.power, np.pi

    def clip(x, lo, hi):
        # np.clip on a scalar is min(max(x, lo), hi) (NaN aside); the result stays a numpy float64 where
        # np.clip returned one, so later arithmetic sees the same types.
        return np.float64(hi if x > hi else lo if x < lo else x)

    class FastStraightLane(StraightLane):
        """A StraightLane along +x (direction exactly (1, 0)): np.dot(delta, (1, 0)) is delta[0] exactly,
        np.dot(delta, (-0, 1)) is delta[1] exactly, so local coordinates need no numpy."""

        def _fast_init(self):
            self._sx, self._sy = float(self.start[0]), float(self.start[1])

        def local_coordinates(self, position):
            x, y = position.tolist() if isinstance(position, np.ndarray) else position
            dx, dy = x - self._sx, y - self._sy
            return dx + dy * 0.0, dx * -0.0 + dy

    class FastNetwork(RoadNetwork):
        """Closest lane without numpy: the same distances, summed in the same order, the first minimum."""

        def _fast_init(self):
            self._flat = [((f, t, i), lane) for f, td in self.graph.items() for t, lanes in td.items()
                          for i, lane in enumerate(lanes)]
            heads = {float(lane.heading) for _, lane in self._flat}
            self._fast = (len(self._flat) > 0 and len(heads) == 1
                          and all(type(lane) is FastStraightLane for _, lane in self._flat))

        def get_closest_lane_index(self, position, heading=None):
            if heading is None or not self._fast:
                return super().get_closest_lane_index(position, heading)
            x, y = position.tolist() if isinstance(position, np.ndarray) else position
            first = self._flat[0][1]
            # lane.local_angle(heading, s) = wrap_to_pi(heading - lane.heading): the same for every lane here
            angle = np.abs(first.local_angle(heading, 0.0))
            best, best_d = None, None
            for idx, lane in self._flat:
                dx, dy = x - lane._sx, y - lane._sy
                s, r = dx + dy * 0.0, dx * -0.0 + dy
                d = abs(r) + max(s - lane.length, 0) + max(0 - s, 0) + 1.0 * angle
                if best_d is None or d < best_d:
                    best, best_d = idx, d
            return best

    class FastRoad(Road):
        """Neighbour queries answered from per-lane lists built once per `act()` (positions do not change
        while vehicles decide); collision pairs that cannot touch skipped before highway-env's check."""

        _nb_cache = None

        def _fast_init(self):
            self._lanes = [(idx, lane) for idx, lane in self.network._flat] if self.network._fast else None
            self._nb_cache = None

        def act(self):
            if self._lanes is not None and not self.neighbour_vehicles_connected_lanes and not self.objects:
                cache = {}
                pos = [(v, *v.position.tolist()) for v in self.vehicles]
                for idx, lane in self._lanes:
                    sx, sy, half, lo = lane._sx, lane._sy, lane.width / 2 + 1, -lane.VEHICLE_LENGTH
                    hi = lane.length + lane.VEHICLE_LENGTH
                    lst = []
                    for v, x, y in pos:
                        dx, dy = x - sx, y - sy
                        s_v, lat = dx + dy * 0.0, dx * -0.0 + dy
                        if abs(lat) <= half and lo <= s_v < hi:    # lane.on_lane(..., margin=1)
                            lst.append((s_v, v))
                    cache[idx] = lst
                self._nb_cache = cache
            try:
                for vehicle in self.vehicles:
                    vehicle.act()
            finally:
                self._nb_cache = None

        def neighbour_vehicles(self, vehicle, lane_index=None):
            cache = self._nb_cache
            if cache is None:
                return super().neighbour_vehicles(vehicle, lane_index)
            lane_index = lane_index or vehicle.lane_index
            if not lane_index:
                return None, None
            lst = cache.get(lane_index)
            if lst is None:
                return super().neighbour_vehicles(vehicle, lane_index)
            lane = self.network.get_lane(lane_index)
            s = lane.local_coordinates(vehicle.position)[0]
            s_front = s_rear = v_front = v_rear = None
            for s_v, v in lst:
                if v is vehicle:
                    continue
                if s <= s_v and (s_front is None or s_v <= s_front):
                    s_front, v_front = s_v, v
                if s_v < s and (s_rear is None or s_v > s_rear):
                    s_rear, v_rear = s_v, v
            return v_front, v_rear

        def step(self, dt):
            vs = self.vehicles
            for vehicle in vs:
                vehicle.step(dt)
            n = len(vs)
            info = [(v, v.check_collisions, *v.position.tolist(), v.diagonal) for v in vs]
            for i in range(n):
                vehicle, ci, xi, yi, di = info[i]
                reach = vehicle.speed * dt
                for j in range(i + 1, n):
                    other, cj, xj, yj, dj = info[j]
                    if not (ci or cj):
                        continue   # handle_collisions returns at once
                    # handle_collisions does nothing unless |p_j - p_i| <= (d_i + d_j) / 2 + speed_i * dt
                    # (its spherical pre-check): skip pairs clearly (by 1e-6 m) farther apart than that.
                    thr = (di + dj) / 2 + reach + 1e-6
                    dx = xj - xi
                    if abs(dx) > thr:
                        continue
                    dy = yj - yi
                    if dx * dx + dy * dy > thr * thr:
                        continue
                    vehicle.handle_collisions(other, dt)
                for other in self.objects:
                    vehicle.handle_collisions(other, dt)

    # `direction` and `velocity` computed once per (heading, speed): they are read many times per frame and
    # change only when `step` assigns new heading / speed objects (the cached objects are kept alive here,
    # so their identity implies the same values). Read-only arrays: no caller can change a shared one.
    def _direction(self):
        h = self.heading
        if self.__dict__.get("_dh", _MISSING) is not h:
            d = np.array([np.cos(h), np.sin(h)])
            d.flags.writeable = False
            self._dh, self._dir = h, d
        return self._dir

    def _velocity(self):
        h, sp = self.heading, self.speed
        dct = self.__dict__
        if dct.get("_vh", _MISSING) is not h or dct.get("_vs", _MISSING) is not sp:
            v = sp * _direction(self)
            v.flags.writeable = False
            self._vh, self._vs, self._vel = h, sp, v
        return self._vel

    def _steering_control(self, target_lane_index):
        # ControlledVehicle.steering_control with np.clip on scalars replaced by min/max
        target_lane = self.road.network.get_lane(target_lane_index)
        lane_coords = target_lane.local_coordinates(self.position)
        lane_next_coords = lane_coords[0] + self.speed * self.TAU_PURSUIT
        lane_future_heading = target_lane.heading_at(lane_next_coords)
        lateral_speed_command = -self.KP_LATERAL * lane_coords[1]
        heading_command = np_arcsin(clip(lateral_speed_command / not_zero(self.speed), -1, 1))
        heading_ref = lane_future_heading + clip(heading_command, -np_pi / 4, np_pi / 4)
        heading_rate_command = self.KP_HEADING * wrap_to_pi(heading_ref - self.heading)
        slip_angle = np_arcsin(clip(self.LENGTH / 2 / not_zero(self.speed) * heading_rate_command, -1, 1))
        steering_angle = np_arctan(2 * np_tan(slip_angle))
        steering_angle = clip(steering_angle, -self.MAX_STEERING_ANGLE, self.MAX_STEERING_ANGLE)
        return float(steering_angle)

    class FastIDMVehicle(IDMVehicle):
        steering_control = _steering_control
        direction = property(_direction)
        velocity = property(_velocity)

        def act(self, action=None):
            # IDMVehicle.act with np.clip on scalars replaced by min/max
            if self.crashed:
                return
            action = {}
            self.follow_road()
            if self.enable_lane_change:
                self.change_lane_policy()
            action["steering"] = clip(self.steering_control(self.target_lane_index),
                                      -self.MAX_STEERING_ANGLE, self.MAX_STEERING_ANGLE)
            front_vehicle, rear_vehicle = self.road.neighbour_vehicles(self, self.lane_index)
            action["acceleration"] = self.acceleration(ego_vehicle=self, front_vehicle=front_vehicle,
                                                       rear_vehicle=rear_vehicle)
            if self.lane_index != self.target_lane_index:
                front_vehicle, rear_vehicle = self.road.neighbour_vehicles(self, self.target_lane_index)
                target_idm_acceleration = self.acceleration(ego_vehicle=self, front_vehicle=front_vehicle,
                                                            rear_vehicle=rear_vehicle)
                action["acceleration"] = min(action["acceleration"], target_idm_acceleration)
            action["acceleration"] = clip(action["acceleration"], -self.ACC_MAX, self.ACC_MAX)
            Vehicle.act(self, action)

        def acceleration(self, ego_vehicle, front_vehicle=None, rear_vehicle=None):
            # IDMVehicle.acceleration with np.clip on scalars replaced by min/max (np.power kept)
            if not ego_vehicle or not isinstance(ego_vehicle, Vehicle):
                return 0
            ego_target_speed = getattr(ego_vehicle, "target_speed", 0)
            if ego_vehicle.lane and ego_vehicle.lane.speed_limit is not None:
                ego_target_speed = clip(ego_target_speed, 0, ego_vehicle.lane.speed_limit)
            acceleration = self.COMFORT_ACC_MAX * (
                1 - np_power(max(ego_vehicle.speed, 0) / abs(not_zero(ego_target_speed)), self.DELTA))
            if front_vehicle:
                d = ego_vehicle.lane_distance_to(front_vehicle)
                acceleration -= self.COMFORT_ACC_MAX * np_power(
                    self.desired_gap(ego_vehicle, front_vehicle) / not_zero(d), 2)
            return acceleration

    class FastMDPVehicle(MDPVehicle):
        steering_control = _steering_control
        direction = property(_direction)
        velocity = property(_velocity)

    # The vehicle overrides copy highway-env 1.12's IDMVehicle.act / .acceleration and
    # ControlledVehicle.steering_control: with another version the vehicles keep their own classes
    # (tests/test_highway.py's lockstep comparison would show any drift of the rest).
    import highway_env
    ok = (str(getattr(highway_env, "__version__", "")).startswith("1.12.")
          and IDMVehicle.act.__qualname__ == "IDMVehicle.act"
          and ControlledVehicle.steering_control.__qualname__ == "ControlledVehicle.steering_control")
    _FAST = dict(lane=FastStraightLane, network=FastNetwork, road=FastRoad, idm=FastIDMVehicle,
                 mdp=FastMDPVehicle, StraightLane=StraightLane, RoadNetwork=RoadNetwork, Road=Road,
                 IDMVehicle=IDMVehicle, MDPVehicle=MDPVehicle, vehicles_ok=ok)
    return _FAST


_FAST = None
_MISSING = object()


def accelerate_scene(env) -> bool:
    """Swap the classes of a freshly built highway-env scene (road, network, lanes, vehicles) for the fast
    exact subclasses, where they are exactly highway-env's classes. Returns whether the road is fast."""
    F = _fast_classes()
    road = env.road
    if road is None:
        return False
    net = road.network
    if type(net) is F["RoadNetwork"]:
        for td in net.graph.values():
            for lanes in td.values():
                for lane in lanes:
                    if (type(lane) is F["StraightLane"] and lane.direction[0] == 1.0 and lane.direction[1] == 0.0
                            and lane.direction_lateral[0] == 0.0 and lane.direction_lateral[1] == 1.0):
                        lane.__class__ = F["lane"]
                        lane._fast_init()
        net.__class__ = F["network"]
        net._fast_init()
    if type(road) is F["Road"] and type(net) is F["network"]:
        road.__class__ = F["road"]
        road._fast_init()
    for v in road.vehicles if F["vehicles_ok"] else ():
        if type(v) is F["IDMVehicle"]:
            v.__class__ = F["idm"]
        elif type(v) is F["MDPVehicle"]:
            v.__class__ = F["mdp"]
    return type(road) is F["road"]


# ---------------------------------------------------------------------------------------------------------
# The world: one highway-env scene with N controlled vehicles, stepped without observation or info work.
# ---------------------------------------------------------------------------------------------------------
ENV_IDS = ("highway-fast-v0", "highway-v0")
_KIN_DEFAULTS = dict(features=["presence", "x", "y", "vx", "vy"], vehicles_count=5, absolute=False,
                     order="sorted", normalize=True, clip=True, see_behind=False)
_ENV_CLASSES: dict[str, type] = {}


def _env_class(env_id: str) -> type:
    """highway-env's class for env_id with `_reset` accelerating the scene it builds."""
    if env_id not in _ENV_CLASSES:
        if env_id not in ENV_IDS:
            raise ValueError(f"highway: env_id={env_id!r} must be one of {', '.join(ENV_IDS)}")
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        from highway_env.envs.highway_env import HighwayEnv, HighwayEnvFast
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
           "observation": {"type": "MultiAgentObservation", "observation_config": dict(_DEFAULT_KINEMATICS)},
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
        self._kin_fast = self._kinematics_fast_ok()

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
    def _kinematics_fast_ok(self) -> bool:
        u = self.env
        ot = getattr(u.observation_type, "agents_observation_types", None)
        if not ot or not getattr(u, "fast_scene", False) or u.road.objects:
            return False
        k = ot[0]
        return all(getattr(k, a, None) == v for a, v in _KIN_DEFAULTS.items())

    def reference_observation(self, i: int) -> np.ndarray:
        """highway-env's own (pandas) Kinematics observation of controlled vehicle i."""
        return self.env.observation_type.agents_observation_types[i].observe()

    def observations(self, which) -> dict[int, np.ndarray]:
        """Kinematics observations (5, 5) float32 of the controlled vehicles in `which`, built with numpy:
        the same values as KinematicObservation.observe (close_objects_to: within PERCEPTION_DISTANCE, not
        behind by more than two lengths, sorted by |lane distance| (stable), the nearest 4; relative rows;
        lmap to [-1, 1] and clip; zero rows for the missing)."""
        which = list(which)
        if not which:
            return {}
        if not self._kin_fast:
            return {i: self.reference_observation(i) for i in which}
        u = self.env
        vs = u.road.vehicles
        index = {id(v): j for j, v in enumerate(vs)}
        P = np.array([v.position for v in vs], np.float64)
        X = P[:, 0]
        dist_max = u.PERCEPTION_DISTANCE
        ots = u.observation_type.agents_observation_types
        F = _fast_classes()
        vel: dict[int, list] = {}

        def velocity(j):
            if j not in vel:
                vel[j] = vs[j].velocity.tolist()
            return vel[j]

        out = {}
        for i in which:
            o = u.controlled_vehicles[i]
            oi = index.get(id(o))
            lane = o.lane
            if oi is None or type(lane) is not F["lane"]:
                out[i] = self.reference_observation(i)
                continue
            D = P - P[oi]
            dist = np.sqrt(D[:, 0] * D[:, 0] + D[:, 1] * D[:, 1])
            sx = lane._sx
            ld = (X - sx) - (X[oi] - sx)                 # o.lane_distance_to(v)
            ok = (dist < dist_max) & (-2 * o.LENGTH < ld)
            near = np.flatnonzero(np.abs(dist - dist_max) < 1e-6)
            for j in near:                               # settle ties at the boundary as np.linalg.norm does
                ok[j] = bool(np.linalg.norm(vs[j].position - o.position) < dist_max) and bool(-2 * o.LENGTH < ld[j])
            ok[oi] = False
            cand = np.flatnonzero(ok)
            order = cand[np.argsort(np.abs(ld[cand]), kind="stable")][: OBS_ROWS - 1]
            ex, ey = P[oi].tolist()
            evx, evy = velocity(oi)
            rows = [[1.0, ex, ey, evx, evy]]
            for j in order.tolist():
                vx, vy = velocity(j)
                x, y = P[j].tolist()
                rows.append([1.0, x - ex, y - ey, vx - evx, vy - evy])
            a = np.array(rows, np.float64)
            rng = ots[i].features_range
            if not rng:
                n_side = len(u.road.network.all_side_lanes(o.lane_index))
                from highway_env.road.lane import AbstractLane
                from highway_env.vehicle.kinematics import Vehicle
                w = AbstractLane.DEFAULT_WIDTH * n_side
                rng = {"x": [-5.0 * Vehicle.MAX_SPEED, 5.0 * Vehicle.MAX_SPEED], "y": [-w, w],
                       "vx": [-2 * Vehicle.MAX_SPEED, 2 * Vehicle.MAX_SPEED],
                       "vy": [-2 * Vehicle.MAX_SPEED, 2 * Vehicle.MAX_SPEED]}
            for c, name in ((1, "x"), (2, "y"), (3, "vx"), (4, "vy")):
                if name in rng:
                    lo, hi = rng[name]
                    a[:, c] = np.clip(-1 + (a[:, c] - lo) * (1 - (-1)) / (hi - lo), -1, 1)   # utils.lmap
            obs = np.zeros((OBS_ROWS, OBS_COLS), np.float32)
            obs[: len(rows)] = a
            out[i] = obs
        return out

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


# ---------------------------------------------------------------------------------------------------------
# The adapter
# ---------------------------------------------------------------------------------------------------------
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

    def render(self) -> np.ndarray:
        """highway-env's own rgb_array frame centred on this agent's vehicle (uint8, H x W x 3)."""
        return self.world.render(self.agent_id)

    def close(self) -> None:
        self.world.close()
