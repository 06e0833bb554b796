"""The `highway` adapter (actors/envs/highway*.py): spaces and spec; legality; per-vehicle rewards equal to
highway-env's own reward for that vehicle, from an unmodified highway-env stepped identically; the
accelerated simulation keeps highway-env's dynamics exactly (every vehicle's state compared in lockstep);
the numpy Kinematics observation equals highway-env's pandas one; crashed vehicles stop acting while the
others go on; seeding; rendering; the registry."""
import numpy as np
import pytest

pytest.importorskip("highway_env", reason="highway-env is not installed: pip install -e .[highway] (deploy/test.sh installs it)")

import gymnasium as gym  # noqa: E402
import highway_env  # noqa: E402

from magicmask.actors.envs import env_spec, make_env  # noqa: E402
from magicmask.actors.envs.highway import HighwayAgentEnv  # noqa: E402
from magicmask.actors.envs.highway_world import IDLE, HighwayWorld, multiagent_config  # noqa: E402
from magicmask.protocol.config import Config, ConfigError  # noqa: E402

gym.register_envs(highway_env)
N = 4


def reference_env(n=N):
    """highway-fast-v0 exactly as highway-env ships it (no class swapped), n controlled vehicles."""
    return gym.make("highway-fast-v0", config=multiagent_config(n)).unwrapped


def reference_rewards(u):
    """highway-env's own reward for every controlled vehicle: `_reward` with it moved to the front of
    controlled_vehicles (environments.md's recipe), computed here independently of the adapter."""
    cv = list(u.controlled_vehicles)
    out = []
    for i in range(len(cv)):
        u.controlled_vehicles = [cv[i]] + cv[:i] + cv[i + 1:]
        out.append(float(u._reward(IDLE)))
    u.controlled_vehicles = cv
    return out


def scene_state(u):
    return [(v.position.tolist(), float(v.heading), float(v.speed), bool(v.crashed), int(v.lane_index[2]),
             int(v.target_lane_index[2]), float(getattr(v, "target_speed", 0.0)),
             float(getattr(v, "timer", 0.0) or 0.0)) for v in u.road.vehicles]


class Recorder:
    """Opponent callback: uniform random actions, recording what each seat was shown."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.calls = []

    def __call__(self, seat, obs, legal):
        a = int(self.rng.choice(np.flatnonzero(legal)))
        self.calls.append((seat, obs.copy(), legal.copy(), a))
        return a


def test_spaces_and_spec():
    env = HighwayAgentEnv(1, N)
    s = env.spec
    assert (s.obs_shape, s.obs_dtype, s.n_actions, s.n_agents, s.shared_world, s.name) == \
        ((25,), "float32", 5, N, True, "highway")
    obs, legal, _ = env.reset(seed=3)
    assert obs.shape == (25,) and obs.dtype == np.float32 and legal.dtype == bool and legal.all()
    assert obs[0] == 1.0 and np.all(np.abs(obs) <= 1.0)   # own car in row 0 (presence 1), normalised
    with pytest.raises(ValueError):
        HighwayAgentEnv(4, 4)
    with pytest.raises(ValueError):
        HighwayAgentEnv(0, 2, env_id="merge-v0")


def test_illegal_actions_raise():
    env = HighwayAgentEnv(0, 2)
    env.reset(seed=0)
    for bad in (-1, 5, 1.5, "x"):
        with pytest.raises(ValueError):
            env.step(bad)
    env.step(IDLE)   # still usable
    masked = HighwayAgentEnv(0, 2, legal_mask=True)
    _, legal, _ = masked.reset(seed=0)
    assert legal[IDLE] and not legal.all()   # this start (seed 0) is on an edge lane: one lane change is off
    with pytest.raises(ValueError):
        masked.step(int(np.flatnonzero(~legal)[0]))


def test_lockstep_with_highway_env_rewards_observations_and_dynamics():
    """Our adapter (agent 2) and an unmodified highway-fast-v0, same seed, same actions for every vehicle:
    identical scenes at every step; agent 2's reward equals highway-env's reward for vehicle 2; every
    observation shown (ours and the peers') equals highway-env's Kinematics observation."""
    me = 2
    env = HighwayAgentEnv(me, N)
    ref = reference_env()
    steps = 0
    for seed in (11, 12, 13):
        rec = Recorder(seed)
        env.set_opponent(rec)
        obs, _, _ = env.reset(seed=seed)
        ref_obs, _ = ref.reset(seed=seed)
        assert scene_state(ref) == scene_state(env.world.env)
        assert np.array_equal(obs, ref_obs[me].reshape(-1))
        # the accelerated classes are really in use (else this test would compare highway-env with itself)
        u = env.world.env
        assert u.fast_scene and env.world._kin_fast and type(u.road).__name__ == "FastRoad"
        assert {type(v).__name__ for v in u.road.vehicles} == {"FastIDMVehicle", "FastMDPVehicle"}
        assert type(ref.road).__name__ == "Road"
        rng = np.random.default_rng(seed)
        for _ in range(30):
            crashed = [v.crashed for v in ref.controlled_vehicles]
            rec.calls.clear()
            a = int(rng.integers(5))
            obs, legal, r, term, trunc, info = env.step(a)
            for seat, o, _, _ in rec.calls:   # what the peers saw: the state before this step
                assert np.array_equal(o, ref_obs[seat].reshape(-1)), f"peer {seat}'s observation"
            assert [c[0] for c in rec.calls] == [j for j in range(N) if j != me and not crashed[j]]
            peer = {c[0]: c[3] for c in rec.calls}
            acts = [a if j == me else IDLE if crashed[j] else peer[j] for j in range(N)]
            ref_obs, _, _, ref_trunc, _ = ref.step(tuple(acts))
            steps += 1
            assert scene_state(ref) == scene_state(env.world.env)
            assert r == reference_rewards(ref)[me]
            assert np.array_equal(obs, ref_obs[me].reshape(-1))
            assert term == bool(ref.controlled_vehicles[me].crashed)
            assert trunc == ref_trunc
            if term or trunc:
                break
    assert steps >= 20


def test_numpy_observation_equals_kinematics_on_many_states():
    """Every controlled vehicle's observation over many states (8 controlled vehicles, dense traffic,
    crashes included) equals highway-env's own KinematicObservation.observe."""
    w = HighwayWorld(8, config={"vehicles_count": 30})
    w.reset(0)
    assert w._kin_fast
    rng = np.random.default_rng(5)
    compared = 0
    for seed in range(4):
        w.reset(seed)
        for _ in range(12):
            crashed = w.crashed()
            w.step([IDLE if c else int(rng.integers(5)) for c in crashed])
            ours = w.observations(range(8))
            for i in range(8):
                assert np.array_equal(ours[i], w.reference_observation(i)), (seed, i)
                compared += 1
            if w.truncated():
                break
    assert compared >= 200


def test_crashed_vehicle_stops_acting_others_go_on():
    """Vehicles crash under random driving; a crashed peer is never asked for an action (it gets IDLE) and
    brakes to a stop, while the live vehicles keep driving; our episode ends when our own vehicle crashes."""
    env = HighwayAgentEnv(0, N)
    rec = Recorder(0)
    env.set_opponent(rec)
    seen_peer_crash = False
    for seed in range(12):
        env.reset(seed=seed)
        for _ in range(40):
            crashed_before = env.world.crashed()
            rec.calls.clear()
            obs, legal, r, term, trunc, info = env.step(IDLE)
            asked = {c[0] for c in rec.calls}
            for j in range(1, N):
                assert (j in asked) == (not crashed_before[j])
            crashed = env.world.crashed()
            assert term == crashed[0] and info["crashed"] == crashed[0]
            if any(crashed_before[1:]) and not term:
                seen_peer_crash = True
                live = [v for j, v in enumerate(env.world.vehicles) if not crashed[j]]
                assert live and all(v.speed > 1.0 for v in live)   # the others go on
                for j in range(1, N):
                    if crashed_before[j]:
                        assert env.world.vehicles[j].action["steering"] == 0.0   # highway-env brakes it
            if term or trunc:
                assert "episode_stats" in info and info["episode_stats"]["crashed"] == float(term)
                break
        if seen_peer_crash:
            break
    assert seen_peer_crash


def test_seeding():
    a, b = HighwayAgentEnv(1, N), HighwayAgentEnv(1, N)
    oa, _, _ = a.reset(seed=7)
    ob, _, _ = b.reset(seed=7)
    assert np.array_equal(oa, ob)
    for _ in range(5):
        ra = a.step(3)
        rb = b.step(3)
        assert np.array_equal(ra[0], rb[0]) and ra[2] == rb[2]
    oc, _, _ = a.reset(seed=8)
    assert not np.array_equal(oa, oc)


def test_render_frame():
    env = HighwayAgentEnv(1, 2)
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3 and frame.shape[0] > 50
    assert frame.std() > 0
    assert env.world.env.enable_auto_render is False   # stepping after a render draws nothing
    env.step(IDLE)


def test_registry_make_env_and_spec():
    cfg = Config()
    cfg.env.name, cfg.run.agents, cfg.env.max_episode_steps = "highway", 3, 4
    spec = env_spec(cfg)
    assert spec.n_agents == 3 and spec.obs_shape == (25,) and spec.n_actions == 5
    env = make_env(cfg, 2, copy_index=1)
    assert env.agent_id == 2 and env.copy_index == 1
    env.reset(seed=1)
    for t in range(4):
        *_, term, trunc, info = env.step(IDLE)
        if term or trunc:
            break
    assert term or trunc   # max_episode_steps 4 truncates at the latest
    cfg.env.kwargs = {"nope": 1}
    with pytest.raises(ConfigError):
        make_env(cfg, 0)
