"""The `grf-3v1` adapter (actors/envs/football.py): spaces and spec; legality; per-player rewards, team reward,
observations and termination equal to an unmodified gfootball env stepped in lockstep with the same joint
actions (one adapter per agent); the checkpoint reward goes to the player on the ball and a goal rewards
every player; the opponent callback plays the two other players; terminations and the step limit; seeding;
the rendered top view; close() hands the engine back for reuse; the registry.

Skipped only when gfootball cannot be imported: deploy/install-football.sh builds it (deploy/test.sh runs
it when it is root and has apt-get)."""
import warnings
from pathlib import Path

import numpy as np
import pytest

try:
    import gfootball.env as gfootball_env
    import gfootball_engine  # noqa: F401  (the compiled engine: a package without it cannot step)
except ImportError as e:
    pytest.skip(f"gfootball is not importable ({e}): deploy/install-football.sh builds it into .venv "
                f"(deploy/test.sh runs it when root with apt-get)", allow_module_level=True)

from magicmask.actors.envs import env_spec, make_env  # noqa: E402
from magicmask.actors.envs.football import N_ACTIONS, OBS_DIM, SCENARIO, FootballEnv  # noqa: E402
from magicmask.protocol import config  # noqa: E402
from magicmask.protocol.config import Config, ConfigError  # noqa: E402

IDLE, RIGHT = 0, 5
# Seeds whose joint actions `joint_actions(seed)` end in a known way (found by search; the episode depends
# only on the seed and the actions, which test_seeding checks): 42 scores at its 41st step, 46 runs into
# gfootball's step limit (401 steps).
GOAL_SEED, LIMIT_SEED = 42, 46


def joint_actions(seed, steps=450):
    """The three players' actions for every step of an episode: uniform random, from the seed."""
    return np.random.default_rng(seed).integers(N_ACTIONS, size=(steps, 3))


def reference_env(rewards="scoring,checkpoints"):
    """academy_3_vs_1_with_keeper exactly as gfootball's create_environment builds it."""
    with warnings.catch_warnings():   # gym 0.25's notice about its old step API
        warnings.simplefilter("ignore", DeprecationWarning)
        return gfootball_env.create_environment(env_name=SCENARIO, representation="simple115v2",
                                                rewards=rewards, number_of_left_players_agent_controls=3)


def reference_reset(env, seed):
    """gfootball's documented seed settings (config keys), set before reset as the adapter does."""
    cfg = env.unwrapped._config
    cfg["game_engine_random_seed"], cfg["reverse_team_processing"] = seed, bool(seed % 2)
    return env.reset()


class Script:
    """Opponent callback playing the scripted joint actions at step `t`, recording what each seat was shown."""

    def __init__(self, acts):
        self.acts, self.t, self.calls = acts, 0, []

    def __call__(self, seat, obs, legal):
        self.calls.append((self.t, seat, obs.copy(), legal.copy()))
        return int(self.acts[self.t, seat])


def play(env, seed, acts=None):
    """One episode of `env` with the scripted joint actions; returns the list of step tuples."""
    acts = joint_actions(seed) if acts is None else acts
    script = Script(acts)
    env.set_opponent(script)
    env.reset(seed=seed)
    out = []
    for t in range(len(acts)):
        script.t = t
        out.append(env.step(int(acts[t, env.agent_id])))
        if out[-1][3] or out[-1][4]:
            return out
    raise AssertionError(f"seed {seed}: no end after {len(acts)} steps")


def test_spaces_spec_and_constructor_errors():
    env = FootballEnv(2)
    s = env.spec
    assert (s.obs_shape, s.obs_dtype, s.n_actions, s.n_agents, s.shared_world, s.name) == \
        ((115,), "float32", 19, 3, True, "grf-3v1")
    obs, legal, info = env.reset(seed=0)
    assert obs.shape == (OBS_DIM,) and obs.dtype == np.float32
    assert legal.shape == (N_ACTIONS,) and legal.dtype == bool and legal.all()
    assert obs[97:108].sum() == 1   # simple115v2's one-hot of the active player
    env.close()
    with pytest.raises(ValueError, match="run.agents=4"):
        FootballEnv(0, 4)
    with pytest.raises(ValueError, match="agent_id=3"):
        FootballEnv(3, 3)
    with pytest.raises(ValueError, match="rewards='checkpoints'"):
        FootballEnv(0, 3, rewards="checkpoints")


def test_illegal_actions_raise_and_every_action_is_legal():
    env = FootballEnv(0)
    env.reset(seed=1)
    for bad in (-1, 19, 1.5, "x"):
        with pytest.raises(ValueError):
            env.step(bad)
    played, done = 0, False
    while not done:   # every action is accepted while the episode lasts, then none
        *_, legal, _, term, trunc, _ = env.step(played % N_ACTIONS)
        assert legal.all()
        played, done = played + 1, term or trunc
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step(IDLE)
    assert played <= 401
    env.close()


@pytest.mark.parametrize("seed", [GOAL_SEED, 5])
def test_lockstep_with_gfootball_per_player_rewards_team_reward_and_opponents(seed):
    """Three adapters (agents 0, 1, 2) and an unmodified gfootball env, same seed, same joint actions: each
    adapter's observation and reward are gfootball's for its player; team_reward is the sum of the three
    players' rewards; the callback is asked for exactly the two other players, shown their observations
    of the step before, with all actions legal, and its actions are the ones played."""
    acts = joint_actions(seed)
    ref = reference_env()
    ref_obs = reference_reset(ref, seed)
    envs = [FootballEnv(i) for i in range(3)]
    scripts = [Script(acts) for _ in envs]
    for env, script in zip(envs, scripts):
        env.set_opponent(script)
        obs, _, _ = env.reset(seed=seed)
        assert np.array_equal(obs, ref_obs[env.agent_id])
    for t in range(len(acts)):
        outs = []
        for env, script in zip(envs, scripts):
            script.t = t
            script.calls.clear()
            outs.append(env.step(int(acts[t, env.agent_id])))
            assert [c[1] for c in script.calls] == [j for j in range(3) if j != env.agent_id]
            for _, seat, o, legal in script.calls:
                assert np.array_equal(o, ref_obs[seat]) and legal.shape == (N_ACTIONS,) and legal.all()
        ref_obs, ref_rew, done, info = ref.step(acts[t])
        for i, (obs, _, r, term, trunc, inf) in enumerate(outs):
            assert np.array_equal(obs, ref_obs[i])
            assert r == float(ref_rew[i])
            assert inf["team_reward"] == pytest.approx(float(np.sum(ref_rew.astype(np.float64))), abs=1e-9)
            assert inf["score_reward"] == info["score_reward"]
            assert (term or trunc) == done
        assert sum(o[2] for o in outs) == pytest.approx(outs[0][5]["team_reward"], abs=1e-9)
        if done:
            break
    assert done
    stats = outs[0][5]["episode_stats"]
    if seed == GOAL_SEED:
        assert stats["goal"] == 1.0 and all(o[3] for o in outs)
        assert all(o[2] >= 1.0 for o in outs)   # the goal's +1 reaches every player
    for env in envs:
        env.close()


def test_checkpoints_go_to_the_player_on_the_ball_and_scoring_is_shared():
    """Over random episodes, from agent 2's side: a step's non-goal team reward (checkpoint rings, multiples
    of 0.1) is all agent 2's when its gfootball player has the ball, and none of it otherwise; with
    rewards='scoring' nothing is paid but the goal's +1, to every player."""
    env = FootballEnv(2)
    mine = others = goal_steps = 0
    for seed in range(4):   # in seed 0 a pass reaches agent 2's player
        acts = joint_actions(seed)
        script = Script(acts)
        env.set_opponent(script)
        env.reset(seed=seed)
        for t in range(len(acts)):
            script.t = t
            _, _, r, term, trunc, info = env.step(int(acts[t, 2]))
            team = info["team_reward"]
            if info["score_reward"] == 0 and team != 0:
                assert abs(team * 10 - round(team * 10)) < 1e-5
                o = env._gf.unwrapped.observation()[2]
                if o["ball_owned_team"] == 0 and o["ball_owned_player"] == o["active"]:
                    assert r == pytest.approx(team, abs=1e-6) and r > 0, (seed, t)
                    mine += 1
                else:
                    assert r == 0, (seed, t)
                    others += 1
            if term or trunc:
                break
    assert mine >= 1 and others >= 1
    scoring = FootballEnv(1, rewards="scoring")
    for seed in (GOAL_SEED, 5):
        steps = play(scoring, seed)
        for _, _, r, _, _, info in steps:
            assert r == info["score_reward"] and info["team_reward"] == 3 * r
            goal_steps += r == 1.0
    assert goal_steps == 1
    env.close()
    scoring.close()


def test_terminations_reasons_and_the_step_limit():
    """Each terminated episode names exactly one reason (goal, ball out of play, ball lost to the
    defenders); gfootball's step limit truncates; max_episode_steps truncates earlier."""
    env = FootballEnv(0)
    reasons = set()
    for seed in (GOAL_SEED, 0, 1, 2, 3, 4):
        *_, (_, _, _, term, trunc, info) = play(env, seed)
        stats = info["episode_stats"]
        flags = [k for k in ("goal", "out_of_play", "lost_ball") if stats[k] == 1.0]
        assert term and not trunc and len(flags) == 1, (seed, stats)
        reasons.add(flags[0])
    assert reasons == {"goal", "out_of_play", "lost_ball"}
    steps = play(env, LIMIT_SEED)
    assert len(steps) == 401 and steps[-1][4] and not steps[-1][3]
    assert env._gf.unwrapped.observation()[0]["steps_left"] == 0
    short = FootballEnv(0, max_episode_steps=5)
    steps = play(short, LIMIT_SEED)
    assert len(steps) == 5 and steps[-1][4] and not steps[-1][3]
    env.close()
    short.close()


def test_seeding():
    """Same seed and actions: the same trajectory, in another instance and after other episodes (the seed
    and the team-processing order are set per reset). Different seeds: different trajectories under the
    same actions, although every episode starts from the scenario's fixed kick-off."""
    a, b = FootballEnv(1), FootballEnv(1)
    acts = joint_actions(7)
    first = play(a, 7, acts)
    play(a, 4)
    play(a, 9)
    for other in (play(a, 7, acts), play(b, 7, acts)):
        assert len(other) == len(first)
        for x, y in zip(first, other):
            assert np.array_equal(x[0], y[0]) and x[2:5] == y[2:5]
    o7, _, _ = a.reset(seed=7)
    o8, _, _ = b.reset(seed=8)
    assert np.array_equal(o7, o8)   # the kick-off is the scenario's, for every seed
    trajs = [np.array([s[0] for s in play(a, seed, acts)]) for seed in (7, 8, 10, 12)]
    assert all(not (len(t) == len(trajs[0]) and np.array_equal(t, trajs[0])) for t in trajs[1:])
    assert a._gf.unwrapped._config["reverse_team_processing"] is False   # seed 12 is even
    a.close()
    b.close()


def test_render_top_view():
    env = FootballEnv(1)
    env.reset(seed=3)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3 and frame.shape[0] > 200
    assert np.array_equal(frame, env.render())   # a picture of the state, nothing else
    # this agent's player is drawn in yellow where gfootball puts it
    from magicmask.actors.envs.football import _ME, _px
    raw = env._gf.unwrapped.observation()
    x, y = raw[1]["left_team"][raw[1]["active"]]
    cx, cy = _px(x, y)
    assert tuple(frame[cy, cx]) == _ME
    for _ in range(8):
        env.step(RIGHT)
    assert not np.array_equal(frame, env.render())
    env.close()
    with pytest.raises(RuntimeError, match="after close"):
        env.render()


def test_close_hands_the_engine_back_for_the_next_env():
    from gfootball.env import football_env_core
    env = FootballEnv(0)
    engine = env._gf.unwrapped._env._env
    env.close()
    env.close()   # idempotent
    assert any(e is engine for e in football_env_core._unused_engines)
    again = FootballEnv(0)
    assert again._gf.unwrapped._env._env is engine   # reused, not a new ~57 MB engine
    again.close()
    with pytest.raises(RuntimeError, match="after close"):
        env.reset(seed=0)


def test_preset_loads_and_builds_the_env():
    """deploy/configs/grf-3v1.yaml is valid, keeps the paper's settings and builds this env."""
    cfg = config.load(Path(__file__).resolve().parents[2] / "deploy/configs/grf-3v1.yaml", environ={})
    assert (cfg.env.name, cfg.run.agents, cfg.env.copies, cfg.mask.tau, cfg.actor.report_every) == \
        ("grf-3v1", 3, 4, 0.5, 50)
    assert env_spec(cfg).obs_shape == (OBS_DIM,)


def test_registry_make_env_and_spec():
    cfg = Config()
    cfg.env.name, cfg.run.agents, cfg.env.max_episode_steps = "grf-3v1", 3, 3
    spec = env_spec(cfg)
    assert (spec.n_agents, spec.obs_shape, spec.n_actions, spec.name) == (3, (115,), 19, "grf-3v1")
    env = make_env(cfg, 2, copy_index=1)
    assert env.agent_id == 2 and env.copy_index == 1
    env.reset(seed=1)
    for _ in range(3):
        *_, term, trunc, _ = env.step(IDLE)
        if term or trunc:
            break
    assert term or trunc
    env.close()
    cfg.run.agents = 4
    with pytest.raises(ConfigError, match="run.agents=4"):
        make_env(cfg, 0)
    cfg.run.agents, cfg.env.kwargs = 3, {"scenario": "11_vs_11_stochastic"}
    with pytest.raises(ConfigError, match="unknown 'scenario'"):
        make_env(cfg, 0)


def test_team_world_matches_each_agents_stream():
    """TeamWorld (the fidelity test's team window): the same seed and joint actions give every slot the
    observations and rewards its own AgentEnv stream gets, and the episode ends on the same step, a goal
    that team_stats reports (`magicmask strength`'s goal rate)."""
    env = FootballEnv(0)
    acts = joint_actions(GOAL_SEED)
    obs, legal = env.team_reset(GOAL_SEED)
    assert env.team_stats() == {"goal": 0.0, "out_of_play": 0.0, "lost_ball": 0.0}
    seen, rewards = [np.stack(obs)], []
    for t in range(len(acts)):
        obs, legal, r, active, done = env.team_step(acts[t])
        seen.append(np.stack(obs))
        rewards.append(r)
        if done:
            break
    assert not active.any() and all(lg.all() for lg in legal)
    own = [play(FootballEnv(a), GOAL_SEED, acts) for a in range(3)]
    assert all(len(o) == len(rewards) for o in own)
    for a in range(3):
        assert [s[2] for s in own[a]] == pytest.approx([float(r[a]) for r in rewards])
        assert np.array_equal(np.stack([s[0] for s in own[a]]), np.stack(seen[1:])[:, a])
    assert sum(r.sum() for r in rewards) > 1.0   # the goal seed: not vacuous
    assert env.team_stats() == {"goal": 1.0, "out_of_play": 0.0, "lost_ball": 0.0}   # how it ended (strength)
    env.close()
