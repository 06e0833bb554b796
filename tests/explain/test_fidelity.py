"""The fidelity test's parts on hand-made inputs: window selection (longest run, ties), the score's sign, and
the replay (determinism, the window's actions differ from the agent's own). No training: the replays use
untrained networks, which is enough for determinism and for the window rule."""
import math
import zlib

import numpy as np
import pytest
import torch

from magicmask.explain import fidelity as F
from magicmask.explain.episodes import AgentPolicy, TrainedRun, record_episodes
from magicmask.models.networks import AgentNets
from magicmask.protocol import config as C


# ---------------- select_window ----------------
def test_window_is_the_longest_run_among_the_top_k():
    imp = [0.9, 0.1, 0.8, 0.7, 0.6, 0.0, 0.95, 0.2, 0.1, 0.05]
    # k = floor(0.5 * 10) = 5: steps {0, 2, 3, 4, 6}; runs [0], [2,3,4], [6] -> the longest is 2..4
    assert F.select_window(imp, 0.5) == (2, 3)


def test_window_k_is_at_least_one_and_floors():
    imp = np.array([0.1, 0.5, 0.2, 0.9, 0.3])
    assert F.select_window(imp, 0.1) == (3, 1)       # floor(0.5) = 0 -> k = 1: the single best step
    assert F.select_window(imp, 0.4) == (3, 1)       # k = 2: {1, 3} not adjacent; equal length -> higher sum
    assert F.select_window(imp, 1.0) == (0, 5)


def test_window_ties_between_runs_higher_sum_then_earlier():
    # k = 4: {0,1} and {4,5}; equally long, {4,5} sums higher
    assert F.select_window([0.5, 0.5, 0.0, 0.0, 0.6, 0.6, 0.0, 0.0], 0.5) == (4, 2)
    # equal sums too -> the earlier run
    assert F.select_window([0.5, 0.5, 0.0, 0.0, 0.5, 0.5, 0.0, 0.0], 0.5) == (0, 2)


def test_window_ties_in_importance_go_to_the_lower_index():
    # all equal: the top-3 are steps 0, 1, 2 (lower index first) -> one run from 0
    assert F.select_window(np.ones(10), 0.3) == (0, 3)
    # step 5 and step 1 tie for the single slot: the lower index wins
    assert F.select_window([0, 0.7, 0, 0, 0, 0.7, 0, 0, 0, 0], 0.1) == (1, 1)


def test_window_rejects_bad_input():
    with pytest.raises(ValueError):
        F.select_window([], 0.1)
    with pytest.raises(ValueError):
        F.select_window([1.0, 2.0], 0.0)


# ---------------- fidelity_score ----------------
def test_score_sign_bigger_drop_higher_and_longer_window_lower():
    L, d = 20, 3.0
    assert F.fidelity_score(3, 0, 2, L, d) > F.fidelity_score(3, 2, 2, L, d)   # bigger drop -> higher
    assert F.fidelity_score(3, 1, 2, L, d) > F.fidelity_score(3, 1, 6, L, d)   # longer window -> lower
    assert F.fidelity_score(3, 0, 2, L, d) == pytest.approx(math.log(1.0) - math.log(2 / 20))
    # an unchanged return is floored at p_d = 1e-3, not log(0)
    assert F.fidelity_score(3, 3, 2, L, d) == pytest.approx(math.log(1e-3) - math.log(0.1))
    # a gain counts like a drop (|delta R|)
    assert F.fidelity_score(1, 2, 2, L, d) == F.fidelity_score(2, 1, 2, L, d)
    with pytest.raises(ValueError):
        F.fidelity_score(1, 0, 0, L, d)


def test_reward_drop_pct():
    assert F.reward_drop_pct(4.0, 3.0) == pytest.approx(25.0)
    assert F.reward_drop_pct(-2.0, -3.0) == pytest.approx(50.0)   # |ret_orig| in the denominator
    assert F.reward_drop_pct(0.0, 0.0) == 0.0


# ---------------- replay ----------------
def _untrained_run(env_cfg: str, agents: int, seed: int = 0) -> TrainedRun:
    cfg = C.load(f"deploy/configs/{env_cfg}", [f"run.agents={agents}"], environ={})
    from magicmask.actors.envs import make_env
    spec = make_env(cfg, 0).spec
    torch.manual_seed(seed)
    pols = []
    for _ in range(agents):
        nets = AgentNets(1, spec.obs_dim, spec.n_actions, cfg.ppo.hidden)
        pols.append(AgentPolicy(nets, cfg.mask.tau))
    return TrainedRun(cfg, None, pols, 0)


@pytest.mark.parametrize("env_cfg", ["gates.yaml", "connect4.yaml"])
def test_replay_without_window_gives_the_recorded_return(env_cfg):
    run = _untrained_run(env_cfg, 2)
    for agent in (0, 1):
        eps = record_episodes(run, agent, 6, 500, masked=False)
        for ep in eps:
            for start in (0, ep.length // 2, ep.length):
                assert F.replay_perturbed(run, agent, ep, start, 0, np.random.default_rng(1)) == pytest.approx(ep.ret)
        if env_cfg == "connect4.yaml":   # returns differ between games: the check is not vacuous
            assert len({e.ret for e in eps}) > 1 or len({e.length for e in eps}) > 1


@pytest.mark.parametrize("env_cfg", ["gates.yaml", "connect4.yaml"])
def test_replay_is_deterministic_for_a_seed(env_cfg):
    run = _untrained_run(env_cfg, 1)
    ep = record_episodes(run, 0, 1, 77, masked=False)[0]
    s, n = F.select_window(np.arange(ep.length)[::-1], 0.3)
    a = [F.replay_perturbed(run, 0, ep, s, n, np.random.default_rng(5)) for _ in range(3)]
    assert a[0] == a[1] == a[2]


class _Recorder:
    """Wraps an env and records the actions it is given."""

    def __init__(self, env):
        self.env, self.actions = env, []
        self.spec = env.spec

    def reset(self, seed):
        self.actions = []
        return self.env.reset(seed=seed)

    def step(self, a):
        self.actions.append(a)
        return self.env.step(a)

    def snapshot(self):
        return None   # every replay from reset, so that every action passes through here


def test_a_replay_from_a_snapshot_is_the_replay_from_reset():
    """Connect Four against sampled peers (the preset's explain.opponent): a replay that restores the state before
    its first perturbed step (prefix_states) returns what the same replay from reset returns, for masked and
    unmasked episodes, windows anywhere (step 0 and the last step included) and the masked replay mode; and it
    does restore (no reset)."""
    run = _untrained_run("connect4.yaml", 2)
    eps = [e for a in (0, 1) for e in record_episodes(run, a, 8, 700, masked=bool(a))]
    g = np.random.default_rng(5)
    jobs = []
    for ep in eps:
        for first in (0, ep.length // 2, ep.length - 1):
            n = int(g.integers(1, ep.length - first + 1))
            jobs.append((ep, np.arange(first, first + n)[: ep.length - first], int(g.integers(1 << 30))))

    def replays():
        return [F.replay_steps(run, ep.agent, ep, st, np.random.default_rng(s), masked=s % 2 == 0) for ep, st, s in jobs]
    full = []
    for ep, st, s in jobs:   # from reset: the env told it takes no snapshots
        env = F.replay_env(run, ep.agent)
        env.snapshot = lambda: None
        run.__dict__.pop("_prefix_states", None)
        full.append(F.replay_steps(run, ep.agent, ep, st, np.random.default_rng(s), masked=s % 2 == 0))
        del env.snapshot
    run.__dict__.pop("_prefix_states", None)
    resets = []
    for a in (0, 1):
        env = F.replay_env(run, a)
        env.reset = (lambda f: lambda seed: resets.append(seed) or f(seed))(env.reset)
    assert replays() == full
    assert replays() == full   # each snapshot restored again: the replays left them as they were
    assert len(resets) == len(eps)   # one replay as recorded per episode, to take the snapshots; none after
    assert len({r for r in full}) > 1


def test_replay_actions_before_inside_and_after_the_window():
    run = _untrained_run("gates.yaml", 1)
    ep = record_episodes(run, 0, 1, 3, masked=False)[0]
    rec = _Recorder(run.make_env(0))
    run.__dict__["_replay_envs"] = {0: rec}
    s, n = 4, 3
    F.replay_perturbed(run, 0, ep, s, n, np.random.default_rng(0))
    acts = np.array(rec.actions)
    assert len(acts) == ep.length
    assert (acts[:s] == ep.actions[:s]).all()                 # recorded actions before the window
    assert (acts[s:s + n] != ep.own_actions[s:s + n]).all()   # never the agent's own choice inside it
    # gates' observations do not depend on the actions taken: after the window the greedy choice is the recorded one
    assert (acts[s + n:] == ep.own_actions[s + n:]).all()


def test_fidelity_rows_columns_and_control():
    run = _untrained_run("gates.yaml", 1)
    eps = record_episodes(run, 0, 3, 10, masked=False)
    imp = {"first": [np.linspace(1, 0, e.length) for e in eps], "last": [np.linspace(0, 1, e.length) for e in eps]}
    rows = F.fidelity_rows(run, 0, eps, imp, [0.1, 0.25], seed=0)
    assert len(rows) == 2 * 3 * 2
    assert all(tuple(r) == F.FIDELITY_COLUMNS for r in rows)
    first = [r for r in rows if r["method"] == "first"]
    assert all(r["window_start"] == 0 for r in first)
    last = [r for r in rows if r["method"] == "last"]
    assert all(r["window_start"] + r["window_len"] == r["episode_len"] for r in last)
    # the control is seeded by (agent, episode, K, length): the same for both methods (equal window lengths)
    for a, b in zip(first, last):
        assert a["control_reward_drop_pct"] == b["control_reward_drop_pct"]


def test_topk_perturbs_every_top_step_and_nothing_else():
    imp = [0.9, 0.1, 0.8, 0.7, 0.0, 0.0, 0.95, 0.2, 0.1, 0.05]
    assert F.select_topk(imp, 0.4).tolist() == [0, 2, 3, 6]   # k = 4: not only the longest run 2..3
    run = _untrained_run("gates.yaml", 1)
    ep = record_episodes(run, 0, 1, 3, masked=False)[0]
    rec = _Recorder(run.make_env(0))
    run.__dict__["_replay_envs"] = {0: rec}
    steps = np.array([2, 5, 6, ep.length - 1])
    F.replay_steps(run, 0, ep, steps, np.random.default_rng(0))
    acts = np.array(rec.actions)
    other = np.setdiff1d(np.arange(2, ep.length), steps)
    assert (acts[:2] == ep.actions[:2]).all()
    assert (acts[steps] != ep.own_actions[steps]).all()
    assert (acts[other] == ep.own_actions[other]).all()
    with pytest.raises(ValueError):
        F.replay_steps(run, 0, ep, np.array([5, 2]), np.random.default_rng(0))


def test_fidelity_rows_in_both_modes():
    run = _untrained_run("gates.yaml", 1)
    eps = record_episodes(run, 0, 3, 10, masked=False)
    spiky = [np.where(np.arange(e.length) % 3 == 0, 1.0, 0.0) + np.linspace(0, 0.1, e.length) for e in eps]
    rows = F.fidelity_rows(run, 0, eps, {"spiky": spiky}, [0.25], seed=0, modes=("window", "topk"))
    win = [r for r in rows if r["mode"] == "window"]
    top = [r for r in rows if r["mode"] == "topk"]
    assert len(win) == len(top) == 3
    for w, t, e in zip(win, top, eps):
        k = max(1, int(0.25 * e.length))
        assert t["window_len"] == k and w["window_len"] == 1   # spikes are never adjacent: the window is one step
    with pytest.raises(ValueError):
        F.fidelity_rows(run, 0, eps, {"spiky": spiky}, [0.25], modes=("diagonal",))


def test_replays_average_independent_replays_and_controls():
    """explain.replays = R: each row's perturbed return is the mean of R replays with their own random actions,
    and its control the mean of R controls at their own random steps (here: connect4, whose random moves
    change the game, so the R replays differ)."""
    run = _untrained_run("connect4.yaml", 2)
    eps = record_episodes(run, 0, 6, 20, masked=False)
    imp = {"first": [np.linspace(1, 0, e.length) for e in eps]}
    one = F.fidelity_rows(run, 0, eps, imp, [0.3], seed=5)
    many = F.fidelity_rows(run, 0, eps, imp, [0.3], seed=5, replays=8)
    assert [r["window_start"] for r in one] == [r["window_start"] for r in many]
    for r1, r8, ep in zip(one, many, eps):
        n = r8["window_len"]
        pert = [F.replay_steps(run, 0, ep, np.arange(n), F.keyed_rng(5, 1, 0, r8["episode"], 0,
                zlib.crc32(np.arange(n, dtype=np.int64).tobytes()), n, r)) for r in range(8)]
        assert r8["return_perturbed"] == pytest.approx(np.mean(pert))
        assert r1["return_perturbed"] == pert[0]
    # averaging narrows the spread of the per-episode paired difference
    d1 = [r["reward_drop_pct"] - r["control_reward_drop_pct"] for r in one]
    d8 = [r["reward_drop_pct"] - r["control_reward_drop_pct"] for r in many]
    assert len({round(x, 6) for x in d8}) > 1 and np.std(d8) < np.std(d1)
    with pytest.raises(ValueError, match="replays=0"):
        F.fidelity_rows(run, 0, eps, imp, [0.3], replays=0)


def test_summary_intervals_say_significant_only_when_the_drop_beats_the_control():
    from magicmask.explain.metrics import fidelity_summary
    rng = np.random.default_rng(0)
    def rows(drops, ctrls):
        return [{"mode": "window", "k": 0.1, "return_orig": 1.0, "return_perturbed": 1 - d / 100, "reward_drop_pct": d,
                 "control_reward_drop_pct": c, "fidelity_score": 0.0, "window_len": 2} for d, c in zip(drops, ctrls)]
    ctrl = rng.uniform(0, 20, 60)
    strong = fidelity_summary(rows(ctrl + rng.uniform(10, 30, 60), ctrl), [0.1])
    lo, hi = strong["drop_minus_control_k10_ci"]
    assert 10 < lo < strong["drop_minus_control_k10"] < hi < 30
    noise = fidelity_summary(rows(rng.uniform(0, 20, 60), ctrl), [0.1])
    lo, hi = noise["drop_minus_control_k10_ci"]
    assert lo < 0 < hi
    r_lo, r_hi = noise["reward_drop_pct_k10_ci"]
    assert r_lo < noise["reward_drop_pct_k10"] < r_hi
    topk = fidelity_summary([dict(r, mode="topk") for r in rows(ctrl + 5, ctrl)], [0.1])
    assert topk["topk_drop_minus_control_k10_ci"] == pytest.approx([5.0, 5.0]) and "drop_minus_control_k10" not in topk



def test_magicmask_against_a_baseline_is_paired_by_agent_and_episode():
    """drop_versus pairs the two methods' rows by (agent, episode): a method whose drops are another's plus 8 on
    every episode differs by exactly 8 (the rows come in different orders), while two methods whose drops are
    independent noise give an interval around 0; rows of the other mode or K are not mixed in."""
    from magicmask.explain.metrics import drop_versus
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 40, 50)
    def rows(drops, mode="window", k=0.1):
        return [{"agent": i % 2, "episode": i // 2, "mode": mode, "k": k, "return_orig": 1.0, "reward_drop_pct": d}
                for i, d in enumerate(drops)]
    better = rows(base + 8)[::-1] + rows(base + 100, mode="topk", k=0.3)
    paired = drop_versus(better, rows(base), [0.1], "magicmask_minus_drop")
    assert paired["magicmask_minus_drop_k10"] == pytest.approx(8.0)
    assert paired["magicmask_minus_drop_k10_ci"] == pytest.approx([8.0, 8.0])
    assert paired["topk_magicmask_minus_drop_k10"] != paired["topk_magicmask_minus_drop_k10"]   # no topk K=10% rows: nan
    lo, hi = drop_versus(rows(rng.uniform(0, 40, 50)), rows(base), [0.1], "x")["x_k10_ci"]
    assert lo < 0 < hi


def test_inter_agent_fidelity_pairs_only_agents_of_the_same_spaces():
    """Dou Dizhu's landlord (790 values) and peasants (901): an explainer reads only episodes of its own space,
    so the landlord's episodes are scored by no peasant and vice versa; the two peasants compare on theirs."""
    from types import SimpleNamespace
    from magicmask.explain.metrics import inter_agent_fidelity
    def ep(dim, n=6):
        return SimpleNamespace(obs=np.zeros((n, dim), np.float32), legal=np.ones((n, 5), bool))
    read = []
    def score(a, e):   # peasants 1 and 2 rank steps the same way; reading a wrong space would be a bug
        assert e.obs.shape[1] == (790 if a == 0 else 901), (a, e.obs.shape)
        read.append(a)
        return np.arange(e.obs.shape[0], dtype=np.float64) * (1 if a else -1)
    spaces = {0: ((790,), 5), 1: ((901,), 5), 2: ((901,), 5)}
    assert inter_agent_fidelity(score, [0, 1, 2], [ep(790), ep(901), ep(901)], spaces) == pytest.approx(1.0)
    assert sorted(read) == [0, 1, 1, 2, 2]
    assert math.isnan(inter_agent_fidelity(score, [0, 1], [ep(790), ep(901)], spaces))   # no pair to compare


def test_agents_in_worker_processes_give_the_rows_of_one_process():
    """explain.workers: the fidelity test of each agent in a forked process gives the same rows, in agent order."""
    run = _untrained_run("connect4.yaml", 3)
    eps = {a: record_episodes(run, a, 3, 40 + a, masked=False) for a in range(3)}
    imp = {"first": {a: [np.linspace(1, 0, e.length) for e in eps[a]] for a in range(3)},
           "last": {a: [np.linspace(0, 1, e.length) for e in eps[a]] for a in range(3)}}
    serial = F.fidelity_all_agents(run, eps, imp, [0.2, 0.5], 3, ("window", "topk"), 2, workers=1)
    forked = F.fidelity_all_agents(run, eps, imp, [0.2, 0.5], 3, ("window", "topk"), 2, workers=3)
    assert forked == serial
    assert [r["agent"] for r in serial] == sorted(r["agent"] for r in serial)
    assert {r["agent"] for r in serial} == {0, 1, 2}
