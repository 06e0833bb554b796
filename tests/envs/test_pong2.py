"""pong2: two agents play each other in PettingZoo's two-player Pong through the adapter."""
import numpy as np
import pytest

from magicmask.actors.envs import env_spec, make_env
from magicmask.protocol import config as C


def cfg(agents=2):
    return C.load(overrides=["env.name=pong2", f"run.agents={agents}", "env.max_episode_steps=200"], environ={})


def test_spec_seeding_and_the_other_paddle():
    spec = env_spec(cfg())
    assert spec.obs_shape == (4, 84, 84) and spec.obs_dtype == "uint8" and spec.n_actions == 6 and spec.shared_world
    a, b = make_env(cfg(), 0), make_env(cfg(), 0)
    seen = []
    a.set_opponent(lambda seat, obs, legal: (seen.append((seat, obs.shape, obs.dtype)), 0)[1])
    oa, la, _ = a.reset(seed=7)
    ob, _, _ = b.reset(seed=7)
    assert np.array_equal(oa, ob) and la.all()
    a.step(1)
    assert seen == [(1, (4, 84, 84), np.dtype("uint8"))]
    frame = a.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    with pytest.raises(ValueError):
        a.step(6)


def test_rewards_are_zero_sum_between_the_two_seats():
    """Agent 0's env and agent 1's env, same seed, mirrored actions: each point one wins the other loses."""
    rng = np.random.default_rng(0)
    acts = rng.integers(0, 6, size=(200, 2))
    e0, e1 = make_env(cfg(), 0), make_env(cfg(), 1)
    i0, i1 = iter(acts[:, 1]), iter(acts[:, 0])
    e0.set_opponent(lambda s, o, l: int(next(i0)))
    e1.set_opponent(lambda s, o, l: int(next(i1)))
    e0.reset(seed=3)
    e1.reset(seed=3)
    r0s, r1s = [], []
    for t in range(200):
        _, _, r0, d0, tr0, _ = e0.step(int(acts[t, 0]))
        _, _, r1, d1, tr1, _ = e1.step(int(acts[t, 1]))
        r0s.append(r0)
        r1s.append(r1)
        assert (d0, tr0) == (d1, tr1)
        if d0 or tr0:
            break
    assert any(r != 0 for r in r0s), "no point was scored in 200 steps"
    np.testing.assert_array_equal(np.array(r0s), -np.array(r1s))


def test_two_players_only():
    with pytest.raises(C.ConfigError, match="two-player"):
        env_spec(cfg(agents=3))
