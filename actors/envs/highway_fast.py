"""Fast, exact subclasses of highway-env's scene objects and `accelerate_scene`, which installs them on a
freshly built scene by swapping `__class__` on its instances (the `highway` env's speed-up; the reasons and
the rules are in actors/envs/highway.py's docstring).

Every override gives the same floats as the highway-env method it replaces (tests/envs/test_highway.py steps
an accelerated scene in lockstep with the unmodified env): straight lanes along +x compute local coordinates
without `np.dot`, the network finds the closest lane without numpy, the road answers neighbour queries from
per-lane lists built once per frame and skips collision pairs that cannot touch, and vehicles clip scalars
with min/max instead of np.clip. This module imports highway-env; the world imports it only when it builds
a scene, so importing the adapter does not.
"""
from __future__ import annotations

import highway_env
import numpy as np
from highway_env import utils
from highway_env.road.lane import StraightLane
from highway_env.road.road import Road, RoadNetwork
from highway_env.vehicle.behavior import IDMVehicle
from highway_env.vehicle.controller import ControlledVehicle, MDPVehicle
from highway_env.vehicle.kinematics import Vehicle

_MISSING = object()

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
# (tests/envs/test_highway.py's lockstep comparison would show any drift of the rest).
VEHICLES_OK = (str(getattr(highway_env, "__version__", "")).startswith("1.12.")
               and IDMVehicle.act.__qualname__ == "IDMVehicle.act"
               and ControlledVehicle.steering_control.__qualname__ == "ControlledVehicle.steering_control")


def _accelerate_lanes(net) -> None:
    """Straight lanes along +x become FastStraightLane; the network becomes FastNetwork."""
    for td in net.graph.values():
        for lanes in td.values():
            for lane in lanes:
                if (type(lane) is StraightLane and lane.direction[0] == 1.0 and lane.direction[1] == 0.0
                        and lane.direction_lateral[0] == 0.0 and lane.direction_lateral[1] == 1.0):
                    lane.__class__ = FastStraightLane
                    lane._fast_init()
    net.__class__ = FastNetwork
    net._fast_init()


def accelerate_scene(env) -> bool:
    """Swap the classes of a freshly built highway-env scene (road, network, lanes, vehicles) for the fast
    exact subclasses, where they are exactly highway-env's classes. Returns whether the road is fast."""
    road = env.road
    if road is None:
        return False
    if type(road.network) is RoadNetwork:
        _accelerate_lanes(road.network)
    if type(road) is Road and type(road.network) is FastNetwork:
        road.__class__ = FastRoad
        road._fast_init()
    for v in road.vehicles if VEHICLES_OK else ():
        if type(v) is IDMVehicle:
            v.__class__ = FastIDMVehicle
        elif type(v) is MDPVehicle:
            v.__class__ = FastMDPVehicle
    return type(road) is FastRoad
