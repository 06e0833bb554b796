"""highway-env's Kinematics observation built with numpy: the same values as its pandas
`KinematicObservation.observe` (tests/envs/test_highway.py compares them on many states), for the default
settings the `highway` adapter uses, on an accelerated scene (actors/envs/highway_fast.py). Anything else
is answered by highway-env's own code."""
from __future__ import annotations

import numpy as np

OBS_ROWS, OBS_COLS = 5, 5
KINEMATICS_DEFAULTS = dict(features=["presence", "x", "y", "vx", "vy"], vehicles_count=5, absolute=False,
                           order="sorted", normalize=True, clip=True, see_behind=False)


def reference_observation(u, i: int) -> np.ndarray:
    """highway-env's own (pandas) Kinematics observation of controlled vehicle i."""
    return u.observation_type.agents_observation_types[i].observe()


def numpy_observations_apply(u) -> bool:
    """Whether the numpy observation applies to highway-env env `u` as it was just reset: an accelerated
    scene without objects, every vehicle observed with the default Kinematics settings."""
    ot = getattr(u.observation_type, "agents_observation_types", None)
    if not ot or not getattr(u, "fast_scene", False) or u.road.objects:
        return False
    return all(getattr(ot[0], a, None) == v for a, v in KINEMATICS_DEFAULTS.items())


class _Scene:
    """One frame's positions and (lazily) velocities of every vehicle on the road, shared by the
    observations of all controlled vehicles asked for in that frame."""

    def __init__(self, u):
        self.vehicles = u.road.vehicles
        self.index = {id(v): j for j, v in enumerate(self.vehicles)}
        self.P = np.array([v.position for v in self.vehicles], np.float64)
        self._vel: dict[int, list] = {}

    def velocity(self, j: int) -> list:
        if j not in self._vel:
            self._vel[j] = self.vehicles[j].velocity.tolist()
        return self._vel[j]


def numpy_observations(u, which) -> dict[int, np.ndarray]:
    """Kinematics observations (5, 5) float32 of the controlled vehicles in `which` of highway-env env `u`
    (where `numpy_observations_apply(u)`): close_objects_to (within PERCEPTION_DISTANCE, not behind by more
    than two lengths, sorted by |lane distance| (stable), the nearest 4), relative rows, lmap to [-1, 1] and
    clip, zero rows for the missing. A vehicle off the road or off a fast straight lane gets highway-env's."""
    from magicmask.actors.envs.highway_fast import FastStraightLane
    scene = _Scene(u)
    out = {}
    for i in which:
        o = u.controlled_vehicles[i]
        oi = scene.index.get(id(o))
        if oi is None or type(o.lane) is not FastStraightLane:
            out[i] = reference_observation(u, i)
            continue
        rows = np.array(_rows(scene, oi, _nearest(u, scene, o, oi)), np.float64)
        _normalise(rows, _features_range(u, i, o))
        obs = np.zeros((OBS_ROWS, OBS_COLS), np.float32)
        obs[: len(rows)] = rows
        out[i] = obs
    return out


def _nearest(u, scene: _Scene, o, oi: int) -> list[int]:
    """Indices of the (up to) 4 vehicles vehicle `o` (index oi) perceives, nearest lane distance first."""
    P, vs = scene.P, scene.vehicles
    X = P[:, 0]
    dist_max = u.PERCEPTION_DISTANCE
    D = P - P[oi]
    dist = np.sqrt(D[:, 0] * D[:, 0] + D[:, 1] * D[:, 1])
    sx = o.lane._sx
    ld = (X - sx) - (X[oi] - sx)                 # o.lane_distance_to(v)
    ok = (dist < dist_max) & (-2 * o.LENGTH < ld)
    near = np.flatnonzero(np.abs(dist - dist_max) < 1e-6)
    for j in near:                               # settle ties at the boundary as np.linalg.norm does
        ok[j] = bool(np.linalg.norm(vs[j].position - o.position) < dist_max) and bool(-2 * o.LENGTH < ld[j])
    ok[oi] = False
    cand = np.flatnonzero(ok)
    return cand[np.argsort(np.abs(ld[cand]), kind="stable")][: OBS_ROWS - 1].tolist()


def _rows(scene: _Scene, oi: int, order: list[int]) -> list[list[float]]:
    """The observer's absolute row, then each perceived vehicle's row relative to it."""
    ex, ey = scene.P[oi].tolist()
    evx, evy = scene.velocity(oi)
    rows = [[1.0, ex, ey, evx, evy]]
    for j in order:
        vx, vy = scene.velocity(j)
        x, y = scene.P[j].tolist()
        rows.append([1.0, x - ex, y - ey, vx - evx, vy - evy])
    return rows


def _features_range(u, i: int, o) -> dict:
    """The observation's features_range, or highway-env's default for vehicle `o`'s road."""
    rng = u.observation_type.agents_observation_types[i].features_range
    if rng:
        return rng
    from highway_env.road.lane import AbstractLane
    from highway_env.vehicle.kinematics import Vehicle
    w = AbstractLane.DEFAULT_WIDTH * len(u.road.network.all_side_lanes(o.lane_index))
    return {"x": [-5.0 * Vehicle.MAX_SPEED, 5.0 * Vehicle.MAX_SPEED], "y": [-w, w],
            "vx": [-2 * Vehicle.MAX_SPEED, 2 * Vehicle.MAX_SPEED], "vy": [-2 * Vehicle.MAX_SPEED, 2 * Vehicle.MAX_SPEED]}


def _normalise(a: np.ndarray, rng: dict) -> None:
    """utils.lmap of each ranged column to [-1, 1], clipped, in place."""
    for c, name in ((1, "x"), (2, "y"), (3, "vx"), (4, "vy")):
        if name in rng:
            lo, hi = rng[name]
            a[:, c] = np.clip(-1 + (a[:, c] - lo) * (1 - (-1)) / (hi - lo), -1, 1)
