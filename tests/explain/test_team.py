"""The fidelity test's team window (explain/team.py) on highway, a cooperative shared world: the team world
agrees with each agent's own stream, the team importance rule on hand-made vectors, the replay (same seed,
no window: the recorded team return), the window perturbs every acting agent, and the rows' shape. Untrained
networks: enough for determinism and for the rules."""
import numpy as np
import pytest
import torch

pytest.importorskip("highway_env", reason="highway-env is not installed: pip install -e .[highway] (deploy/test.sh installs it)")

from magicmask.actors.envs import make_env  # noqa: E402
from magicmask.explain import team as TM  # noqa: E402
from magicmask.explain.episodes import AgentPolicy, TrainedRun, record_episodes  # noqa: E402
from magicmask.explain.fidelity import select_window  # noqa: E402
from magicmask.models.networks import AgentNets  # noqa: E402
from magicmask.protocol import config as C  # noqa: E402


def _untrained_run(agents: int = 3, seed: int = 0) -> TrainedRun:
    cfg = C.load("deploy/configs/highway.yaml", [f"run.agents={agents}"], environ={})
    spec = make_env(cfg, 0).spec
    torch.manual_seed(seed)
    pols = [AgentPolicy(AgentNets(1, spec.obs_dim, spec.n_actions, cfg.ppo.hidden), cfg.mask.tau) for _ in range(agents)]
    return TrainedRun(cfg, None, pols, 0)


@pytest.fixture(scope="module")
def run():
    return _untrained_run()


@pytest.fixture(scope="module")
def team_eps(run):
    return TM.record_team_episodes(run, 3, 4242)


def test_team_rank_max_rule_on_hand_made_importance():
    # agent 0 acts at steps 0..3, agent 1 only at 1..2 (e.g. crashed after step 2)
    team = TM.team_importance(5, [(np.arange(4), np.array([10.0, 0.0, 5.0, 7.0])),
                                  (np.array([1, 2]), np.array([-3.0, 100.0]))])
    # ranks of agent 0: 10 -> 1, 0 -> 0, 5 -> 1/3, 7 -> 2/3; agent 1: -3 -> 0, 100 -> 1; max per step
    assert team == pytest.approx([1.0, 0.0, 1.0, 2 / 3, 0.0])
    # scale does not matter, ties share their mean rank
    assert TM.team_importance(3, [(np.arange(3), np.array([2.0, 2.0, 9.0]))]) == pytest.approx([0.25, 0.25, 1.0])
    with pytest.raises(ValueError, match="2 importances for 3 steps"):
        TM.team_importance(3, [(np.arange(3), np.zeros(2))])


def test_team_world_matches_each_agents_own_stream(run):
    """Agent 1's own env, with the other vehicles replaying a team episode's actions, sees the same
    observations and earns the same rewards as seat 1 of the team episode."""
    tep = TM.play_team(run, 99, lambda t, a, o, l: int((t + a) % 5))
    env = make_env(run.cfg, 1)
    env.set_opponent(lambda j, o, l: int(tep.actions[t, j]))
    obs, _, _ = env.reset(99)
    for t in range(tep.length):
        if not tep.active[t, 1]:
            break
        assert np.array_equal(obs, tep.obs[1][t])
        obs, _, r, term, trunc, _ = env.step(int(tep.actions[t, 1]))
        assert r == pytest.approx(float(tep.rewards[t, 1]))
        if term or trunc:
            break
    assert t >= 3


def test_team_replay_without_window_gives_the_recorded_return(run, team_eps):
    assert len({(e.length, round(e.ret, 6)) for e in team_eps}) > 1      # not vacuous: episodes differ
    for ep in team_eps:
        for start in (0, ep.length // 2, ep.length):
            assert TM.replay_team(run, ep, start, 0, np.random.default_rng(1)) == pytest.approx(ep.ret)


def test_team_window_perturbs_every_acting_agent(run, team_eps, monkeypatch):
    ep = team_eps[0]
    seen = []
    real = TM.play_team

    def spy(run_, seed, choose, max_steps=100_000):
        def wrapped(t, a, o, l):
            act = choose(t, a, o, l)
            seen.append((t, a, act, run_.policies[a].greedy(o, l)))
            return act
        return real(run_, seed, wrapped, max_steps)
    monkeypatch.setattr(TM, "play_team", spy)
    start, n = 1, 3
    TM.replay_team(run, ep, start, n, np.random.default_rng(0))
    inside = [(t, a) for t, a, act, own in seen if start <= t < start + n]
    assert {a for _, a in inside} == set(range(run.cfg.run.agents))         # every agent perturbed together
    assert all(act != own for t, a, act, own in seen if start <= t < start + n)
    assert all(act == ep.actions[t, a] for t, a, act, own in seen if t < start)
    assert all(act == own for t, a, act, own in seen if t >= start + n)


def test_agent_view_and_team_rows(run, team_eps):
    steps, view = TM.agent_view(run, team_eps[0], 2)
    assert view.length == len(steps) == int(team_eps[0].active[:, 2].sum())
    assert np.array_equal(view.actions, view.own_actions)       # team episodes are greedy
    imps = {"late": [np.arange(e.length, dtype=float) for e in team_eps]}
    rows = TM.team_fidelity_rows(run, team_eps, imps, [0.1, 0.4], seed=3)
    assert len(rows) == 2 * len(team_eps) and {r["agent"] for r in rows} == {"team"}
    for r in rows:
        ep = team_eps[r["episode"]]
        assert (r["window_start"], r["window_len"]) == select_window(np.arange(ep.length, dtype=float), r["k"])
        assert r["return_orig"] == pytest.approx(ep.ret)


def test_cooperative_episodes_are_explained_with_greedy_teammates(run):
    """In a TeamWorld the explained agent's teammates play their own greedy policies: agent 0's recorded
    episode equals seat 0 of the team episode of the same seed."""
    ep = record_episodes(run, 0, 1, 4242, masked=False)[0]
    tep = TM.record_team_episodes(run, 1, 4242)[0]
    n = int(tep.active[:, 0].sum())
    assert ep.length == n
    assert np.array_equal(ep.actions, tep.actions[:n, 0])
    assert ep.rewards == pytest.approx(tep.rewards[:n, 0])


def test_explain_highway_writes_team_rows_and_report_section(tmp_path):
    """`magicmask explain` on a (2-agent, untrained) highway run adds the team window's rows, metrics and
    the report's team plot; one-agent worlds and explain.team_episodes=0 leave it out."""
    import csv
    import json

    from magicmask.api import explain_run as run_explain
    from magicmask.learner import checkpoint
    cfg = C.load("deploy/configs/highway.yaml", ["run.agents=2", "env.max_episode_steps=12"], environ={})
    run_dir = tmp_path / "hw"
    run_dir.mkdir()
    C.save(cfg, run_dir / "config.yaml")
    spec = make_env(cfg, 0).spec
    torch.manual_seed(0)
    checkpoint.save({"nets": AgentNets(2, spec.obs_dim, spec.n_actions, cfg.ppo.hidden).state_dict(), "version": 0},
                    run_dir / "checkpoints", 0)
    out = run_explain(run_dir, overrides=["explain.episodes=2", "explain.team_episodes=2", "explain.top_states=1",
                                          "explain.methods=magicmask,valuemax,random", "explain.k_fractions=0.1,0.4"],
                      log=lambda *_: None)
    with open(out / "fidelity.csv") as f:
        rows = list(csv.DictReader(f))
    team = [r for r in rows if r["agent"] == "team"]
    assert len(team) == 3 * 2 * 2 and {r["mode"] for r in team} == {"window"}   # the team window: window mode
    assert len(rows) - len(team) == 3 * 2 * 2 * 2 * 2   # methods x agents x episodes x K x (window, topk)
    metrics = json.loads((out / "metrics.json").read_text())
    assert "team_reward_drop_pct_k10" in metrics["magicmask"] and "team_fidelity_score_k40" in metrics["random"]
    assert "team episodes" in json.loads((out / "summary.json").read_text())["notes"]["team_window"]
    assert "team (joint window)" in (out / "index.html").read_text()
    out = run_explain(run_dir, overrides=["explain.episodes=1", "explain.team_episodes=0", "explain.top_states=1",
                                          "explain.methods=random", "explain.k_fractions=0.1"], report=False,
                      log=lambda *_: None)
    with open(out / "fidelity.csv") as f:
        assert all(r["agent"] != "team" for r in csv.DictReader(f))
