"""Ground truth from any env: a PettingZoo env that reports info["critical"] gets it through the adapter (AEC and
Parallel) into the steps, the recorded episodes and precision@k, with a step that is critical for every agent."""
import numpy as np
import pytest

from magicmask.actors.envs import make_env
from magicmask.models.critical_scores import precision_at_k
from magicmask.protocol.config import Config

FACTORIES = ["tests.envs.toy_envs:make_team_gates", "tests.envs.toy_envs:make_team_gates_aec"]
SHARED, PRIVATE, N_STEPS = 3, 5, 10


def _cfg(name, agents=3):
    cfg = Config()
    cfg.env.name, cfg.run.agents = name, agents
    return cfg


def _gate_player(agent, obs, legal):
    """The other seats keep their gates: the team reward then depends on our seat alone."""
    t = int(np.argmax(obs))
    return 1 if t == SHARED else 2 if t == PRIVATE + agent else 0


@pytest.mark.parametrize("name", FACTORIES)
@pytest.mark.parametrize("agent", [0, 1, 2])
def test_the_adapter_passes_each_seats_critical_steps(name, agent):
    env = make_env(_cfg(name), agent)
    env.set_opponent(_gate_player)
    env.reset(seed=0)
    flags, rewards = [], []
    for t in range(N_STEPS):
        *_, r, term, trunc, info = env.step(0)   # action 0 never keeps a gate
        flags.append(info["critical"])
        rewards.append(r)
        if term or trunc:
            break
    assert len(flags) == N_STEPS
    assert np.flatnonzero(flags).tolist() == [SHARED, PRIVATE + agent]
    # our misses cost the team: the other seats kept theirs, so the shared gate pays 2 of 3, our private gate 0
    assert rewards[SHARED] == 2.0 and rewards[PRIVATE + agent] == 0.0


@pytest.mark.parametrize("name", FACTORIES)
def test_recorded_episodes_carry_the_ground_truth_and_score_precision(name):
    from magicmask.explain.episodes import AgentPolicy, TrainedRun, record_episodes
    from magicmask.models.networks import build_nets

    cfg = _cfg(name)
    spec = make_env(cfg, 0).spec
    pols = [AgentPolicy(build_nets(spec, cfg.ppo, cfg.mask, 1, seed=a), cfg.mask.tau) for a in range(3)]
    run = TrainedRun(cfg, None, pols, 0)
    truth = {}
    for agent in range(3):
        (ep,) = record_episodes(run, agent, 1, 5, masked=False)
        assert ep.true_critical is not None and ep.true_critical.shape == (ep.length,)
        truth[agent] = set(np.flatnonzero(ep.true_critical).tolist())
        perfect = ep.true_critical.astype(float) + np.linspace(0, 0.01, ep.length)
        assert precision_at_k(perfect, ep.true_critical) == 1.0
        assert precision_at_k(-perfect, ep.true_critical) == 0.0
    assert set.intersection(*truth.values()) == {SHARED}   # the step critical for every agent
    assert all(PRIVATE + a in truth[a] for a in range(3))


def test_an_env_without_the_flag_reports_no_ground_truth():
    env = make_env(_cfg("tests.envs.toy_envs:make_parallel"), 0)
    env.set_opponent(lambda agent, obs, legal: 0)
    env.reset(seed=0)
    *_, info = env.step(0)
    assert "critical" not in info
