"""pong's two backends: EnvPool's frames agree with the ale + gymnasium wrappers path (the same preprocessing),
a replayable EnvPool env replays an episode from its seed, a training one keeps its env across resets, and a
step split into step_async / step_wait is the same step."""
import numpy as np
import pytest

pytest.importorskip("ale_py", reason="ale-py is not installed: pip install -e .[atari] (deploy/test.sh installs it)")
pytest.importorskip("envpool", reason="envpool is not installed (Linux wheels only): pip install -e .[atari] "
                    "(deploy/test.sh installs it)")

from magicmask.actors.envs.pong import PongEnv   # noqa: E402
from magicmask.protocol.config import ConfigError   # noqa: E402


def _play(env, seed, actions, split=False):
    frames = [env.reset(seed=seed)[0]]
    rewards = []
    for a in actions:
        if split:
            env.step_async(int(a))
            o, _, r, term, trunc, _ = env.step_wait()
        else:
            o, _, r, term, trunc, _ = env.step(int(a))
        frames.append(o)
        rewards.append(r)
        if term or trunc:
            break
    return np.stack(frames), rewards


@pytest.mark.parametrize("size", [84, 42])
def test_envpool_frames_agree_with_the_ale_path(size):
    """Deterministic starts (no sticky actions, no no-ops) and the same actions: the stacks agree to within a
    grey level on average and in all but a few pixels (measured: 0.04-0.15 mean, 2-8 pixels of 7,056 over 40
    grey levels apart in the first 100 steps; ALE versions differ), shapes and dtypes equal."""
    ale = PongEnv(0, 1, sticky=0.0, noop_max=0, screen_size=size)
    pool = PongEnv(0, 1, sticky=0.0, noop_max=0, screen_size=size, backend="envpool")
    assert ale.spec == pool.spec and ale.spec.obs_shape == (4, size, size)
    assert not ale.overlaps_steps and pool.overlaps_steps
    actions = np.random.default_rng(0).integers(6, size=100)
    a, _ = _play(ale, 3, actions)
    b, _ = _play(pool, 3, actions)
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    diff = np.abs(a.astype(np.int16) - b)
    assert diff.mean(axis=(1, 2, 3)).max() < 1.0
    assert (diff > 40).mean(axis=(1, 2, 3)).max() < 0.01
    # and not trivially: the frames change over the episode (the ball and paddles move)
    assert np.abs(a[-1].astype(np.int16) - a[1]).sum() > 1000


def test_a_replayable_envpool_env_replays_its_seed_and_a_training_one_keeps_its_env():
    actions = np.random.default_rng(1).integers(6, size=150)
    env = PongEnv(0, 1, screen_size=42, backend="envpool")           # sticky 0.25, up to 30 no-ops
    first, r1 = _play(env, 7, actions)
    again, r2 = _play(env, 7, actions, split=True)                    # and the split step is the same step
    np.testing.assert_array_equal(first, again)
    assert r1 == r2
    other, _ = _play(env, 8, actions)
    assert not np.array_equal(first, other)
    train = PongEnv(0, 1, screen_size=42, backend="envpool", replayable=False)
    train.reset(seed=7)
    built = train.env
    train.reset(seed=7)
    assert train.env is built                                          # no rebuild (0.4 s) per episode
    # Pong-v5's sticky actions reach EnvPool (its own default is 0)
    assert env.env.config["repeat_action_probability"] == pytest.approx(0.25)
    assert PongEnv(0, 1, sticky=0.0, backend="envpool").env.config["repeat_action_probability"] == 0.0


def test_noop_max_zero_and_bad_options():
    env = PongEnv(0, 1, noop_max=0, screen_size=42, backend="envpool")   # EnvPool itself crashes on 0
    assert env.reset(seed=0)[0].shape == (4, 42, 42)
    with pytest.raises(ConfigError, match="backend='gym'"):
        PongEnv(0, 1, backend="gym")
    with pytest.raises(ConfigError, match="screen_size=8"):
        PongEnv(0, 1, screen_size=8)
