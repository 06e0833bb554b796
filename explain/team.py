"""The fidelity test's team window (explainers.md, section 0, multi-agent; conventions in docs/metrics.md).

In a cooperative shared world (an env that is a `TeamWorld`: highway, grf-3v1) a team episode is one world
where every agent plays its own greedy policy. Each agent's explainer scores that agent's own steps of it
(its observations while it acts), and the team's importance of a world step is the largest of the agents'
importances there, each first turned into a rank within that agent's own steps (so methods whose scores
are on different scales per agent, or agents who act for fewer steps, are comparable). The window is
chosen on the team's importance exactly as for one agent (`select_window`); inside it every acting agent
takes a uniform random legal action other than its own greedy one, before it the recorded actions, after it
every agent's greedy policy. The return is the team's: the sum over steps and agents of each agent's reward.
Rows of fidelity.csv with agent = "team".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.stats import rankdata

from magicmask.actors.envs.base import TeamWorld
from magicmask.explain.baselines.base import random_other_legal
from magicmask.explain.episodes import Episode, TrainedRun
from magicmask.explain.fidelity import RET_FLOOR, fidelity_score, keyed_rng, reward_drop_pct, select_window
from magicmask.explain.metrics import reannotate


@dataclass
class TeamEpisode:
    """One team episode: per world step t and agent a, what a saw, could do, did and earned."""
    seed: int
    obs: list[np.ndarray]      # per agent [L, *obs_shape]
    legal: list[np.ndarray]    # per agent [L, A] bool
    actions: np.ndarray        # [L, N] int64 (greedy; meaningless where not active)
    active: np.ndarray         # [L, N] bool: agent a acted at step t
    rewards: np.ndarray        # [L, N] float32 (0 where not active)
    stats: dict = field(default_factory=dict)   # the env's team_stats() at the end (e.g. grf-3v1's goal)

    @property
    def length(self) -> int:
        return len(self.actions)

    @property
    def ret(self) -> float:
        return float(self.rewards.sum())


def is_team_world(run: TrainedRun) -> bool:
    """A team window exists: a cooperative shared world with at least two agents."""
    return run.cfg.run.agents > 1 and isinstance(team_env(run), TeamWorld)


def team_env(run: TrainedRun):
    """One env used for every team episode of the run (kept on the run object; team_reset reseeds it)."""
    if "_team_env" not in run.__dict__:
        run.__dict__["_team_env"] = run.make_env(0)
    return run.__dict__["_team_env"]


def play_team(run: TrainedRun, seed: int, choose: Callable[[int, int, np.ndarray, np.ndarray], int],
              max_steps: int = 100_000) -> TeamEpisode:
    """Play one team episode from `seed`; choose(t, agent, obs, legal) gives each acting agent's action."""
    env, n = team_env(run), run.cfg.run.agents
    obs, legal = env.team_reset(seed)
    active = np.ones(n, bool)
    rec = {"obs": [[] for _ in range(n)], "legal": [[] for _ in range(n)], "actions": [], "active": [], "rewards": []}
    for t in range(max_steps):
        acts = [choose(t, a, obs[a], legal[a]) if active[a] else 0 for a in range(n)]
        for a in range(n):
            rec["obs"][a].append(obs[a])
            rec["legal"][a].append(legal[a])
        rec["actions"].append(acts)
        rec["active"].append(active.copy())
        obs, legal, rewards, active, done = env.team_step(acts)
        rec["rewards"].append(rewards)
        if done:
            break
    return TeamEpisode(seed=int(seed), obs=[np.stack(o) for o in rec["obs"]], legal=[np.stack(x).astype(bool) for x in rec["legal"]],
                       actions=np.asarray(rec["actions"], np.int64), active=np.asarray(rec["active"], bool),
                       rewards=np.asarray(rec["rewards"], np.float32), stats=env.team_stats())


def record_team_episodes(run: TrainedRun, n: int, first_seed: int) -> list[TeamEpisode]:
    """n team episodes, every agent greedy, seeds first_seed .. first_seed + n - 1."""
    return [play_team(run, first_seed + i, lambda t, a, o, l: run.policies[a].greedy(o, l)) for i in range(n)]


def agent_view(run: TrainedRun, tep: TeamEpisode, agent: int) -> tuple[np.ndarray, Episode]:
    """(the world steps where `agent` acted, those steps as that agent's own unmasked Episode)."""
    steps = np.flatnonzero(tep.active[:, agent])
    n = len(steps)
    actions = tep.actions[steps, agent]
    ep = Episode(agent=agent, seed=tep.seed, obs=tep.obs[agent][steps], legal=tep.legal[agent][steps],
                 actions=actions, own_actions=actions, rewards=tep.rewards[steps, agent],
                 m=np.zeros(n, np.float32), values=np.zeros(n, np.float32), perturbed=np.zeros(n, bool), masked=False)
    return steps, reannotate(run, agent, ep)   # the agent's own greedy actions, V(s) and m at its states


def _ranks01(x: np.ndarray) -> np.ndarray:
    """Average ranks scaled to [0, 1] (ties share their mean rank; one step gets 1)."""
    return np.ones(1) if len(x) == 1 else (rankdata(x) - 1.0) / (len(x) - 1)


def team_importance(length: int, per_agent: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The team's importance over `length` world steps from (steps, importance) per agent: the max over the
    agents acting at a step of their rank-scaled importance (0 where no agent acts)."""
    team = np.zeros(length)
    for steps, imp in per_agent:
        if len(steps):
            if len(imp) != len(steps):
                raise ValueError(f"team_importance: {len(imp)} importances for {len(steps)} steps")
            team[steps] = np.maximum(team[steps], _ranks01(imp))
    return team


def replay_team(run: TrainedRun, tep: TeamEpisode, start: int, length: int, rng: np.random.Generator) -> float:
    """The team's return replayed from the same seed: recorded actions before `start`, inside the window every
    acting agent takes a uniform random legal action other than its greedy one (if it has another), after
    it every agent's greedy policy. With length 0 this is the recorded return (tested)."""
    if start < 0 or length < 0 or start > tep.length:
        raise ValueError(f"replay_team: window ({start}, {length}) outside the team episode of {tep.length} steps")

    def choose(t, a, obs, legal):
        if t < start:
            return int(tep.actions[t, a])
        own = run.policies[a].greedy(obs, legal)
        return own if t >= start + length else random_other_legal(rng, legal, own)
    return play_team(run, tep.seed, choose).ret


def team_d_max(episodes: list[TeamEpisode]) -> float:
    """The scale of a team return change: the largest |team return| of the episodes (at least 1e-6)."""
    return max(max((abs(e.ret) for e in episodes), default=0.0), RET_FLOOR)


def team_fidelity_rows(run: TrainedRun, episodes: list[TeamEpisode], importance: dict[str, list[np.ndarray]],
                       k_fracs, seed: int = 0, d_max: float | None = None) -> list[dict]:
    """Rows of fidelity.csv with agent "team": importance[method][i] is the team's importance over the world
    steps of episodes[i]. d_max: the largest |team return| of the episodes unless given. Random numbers as
    in `fidelity_rows`, with the agent key -1 (common across methods choosing the same window)."""
    d_max = team_d_max(episodes) if d_max is None else d_max
    rows, cache = [], {}

    def replay(i, ep, ki, s, n):
        if (i, ki, s, n) not in cache:
            cache[(i, ki, s, n)] = replay_team(run, ep, s, n, keyed_rng(seed, 1, -1, i, ki, s, n))
        return cache[(i, ki, s, n)]

    for method, imps in importance.items():
        for i, ep in enumerate(episodes):
            for ki, kf in enumerate(k_fracs):
                s, n = select_window(imps[i], kf)
                r_pert = replay(i, ep, ki, s, n)
                cs = int(keyed_rng(seed, 2, -1, i, ki, n).integers(ep.length - n + 1))
                r_ctrl = replay(i, ep, ki, cs, n)
                rows.append({"method": method, "agent": "team", "mode": "window", "k": float(kf), "episode": i, "window_start": s,
                             "window_len": n, "episode_len": ep.length, "return_orig": ep.ret,
                             "return_perturbed": r_pert, "reward_drop_pct": reward_drop_pct(ep.ret, r_pert),
                             "fidelity_score": fidelity_score(ep.ret, r_pert, n, ep.length, d_max),
                             "control_reward_drop_pct": reward_drop_pct(ep.ret, r_ctrl)})
    return rows
