"""The fidelity test (explainers.md, section 0; the conventions are stated in docs/metrics.md).

For an episode the agent played unmasked and an explainer's per-step importance over it:
  1. the steps to perturb, in one of two modes: `window` (`select_window`: the top-k steps, k = max(1,
     floor(K * L)), their longest contiguous run) or `topk` (`select_topk`: all top-k steps, the paper's
     variant);
  2. `replay_steps`: same env seed, the recorded actions before the first perturbed step, at each perturbed
     step a uniform random legal action other than the agent's own greedy choice, elsewhere after it the
     agent's greedy policy to the end;
  3. `fidelity_score` = log(p_d) - log(p_l), p_d = max(|R - R'| / d_max, 1e-3), p_l = l / L (higher is better);
  4. the control: the same replay with as many steps chosen at random (window: a window of equal length at a
     seeded random start; topk: that many seeded random steps);
  5. with `explain.replays` R > 1, steps 2-4 R times with fresh random actions (and control steps), averaged:
     the same expectation estimated with less noise per episode, so narrower intervals for the same episodes.
`fidelity_rows` does this for one agent, every method, every K and every mode, and returns the rows of
fidelity.csv.
"""
from __future__ import annotations

import math
import zlib

import numpy as np

from magicmask.models.action_selection import softmax_legal
from magicmask.explain.baselines.base import random_other_legal
from magicmask.explain.episodes import Episode, TrainedRun
from magicmask.explain.parallel import job, map_agents

FIDELITY_MODES = ("window", "topk")
FIDELITY_COLUMNS = ("method", "agent", "mode", "k", "episode", "window_start", "window_len", "episode_len", "return_orig",
                    "return_perturbed", "reward_drop_pct", "fidelity_score", "control_reward_drop_pct")
P_D_FLOOR = 1e-3      # p_d is floored so that an unchanged return gives log(1e-3), not log(0)
RET_FLOOR = 1e-6      # denominator floor of reward_drop_pct


def select_window(importance, k_frac: float) -> tuple[int, int]:
    """(start, length) of the perturbation window: k = max(1, floor(k_frac * L)) highest-importance steps
    (ties: the lower step index ranks first), sorted; the longest run of consecutive indices among them.
    Between equally long runs: the higher summed importance, then the earlier run."""
    imp = np.asarray(importance, np.float64).reshape(-1)
    L = len(imp)
    if L == 0:
        raise ValueError("select_window: empty importance vector")
    if not 0.0 < k_frac <= 1.0:
        raise ValueError(f"select_window: k_frac={k_frac} must be in (0, 1]")
    k = max(1, int(math.floor(k_frac * L + 1e-9)))
    key = np.where(np.isnan(imp), -np.inf, imp)
    top = np.sort(np.argsort(-key, kind="stable")[:k])
    best = None   # (length, summed importance, -start)
    start = 0
    for i in range(1, len(top) + 1):
        if i == len(top) or top[i] != top[i - 1] + 1:
            s, n = int(top[start]), i - start
            cand = (n, float(key[s:s + n].sum()), -s)
            if best is None or cand > best:
                best = cand
            start = i
    return -best[2], best[0]


def select_topk(importance, k_frac: float) -> np.ndarray:
    """The k = max(1, floor(k_frac * L)) highest-importance step indices (ties: the lower index first), sorted."""
    imp = np.asarray(importance, np.float64).reshape(-1)
    if len(imp) == 0:
        raise ValueError("select_topk: empty importance vector")
    if not 0.0 < k_frac <= 1.0:
        raise ValueError(f"select_topk: k_frac={k_frac} must be in (0, 1]")
    k = max(1, int(math.floor(k_frac * len(imp) + 1e-9)))
    key = np.where(np.isnan(imp), -np.inf, imp)
    return np.sort(np.argsort(-key, kind="stable")[:k])


def fidelity_score(ret_orig: float, ret_pert: float, length: int, L: int, d_max: float) -> float:
    """log(p_d) - log(p_l), p_d = max(|ret_orig - ret_pert| / d_max, 1e-3), p_l = length / L. Higher is better:
    a larger return change from a shorter window."""
    if L <= 0 or not 1 <= length <= L:
        raise ValueError(f"fidelity_score: need 1 <= length ({length}) <= L ({L})")
    if d_max <= 0:
        raise ValueError(f"fidelity_score: d_max={d_max} must be > 0")
    p_d = max(abs(float(ret_orig) - float(ret_pert)) / float(d_max), P_D_FLOOR)
    return math.log(p_d) - math.log(length / L)


def reward_drop_pct(ret_orig: float, ret_pert: float) -> float:
    """100 * (ret_orig - ret_pert) / max(|ret_orig|, 1e-6): positive when the perturbation cost reward."""
    return 100.0 * (float(ret_orig) - float(ret_pert)) / max(abs(float(ret_orig)), RET_FLOOR)


def replay_env(run: TrainedRun, agent: int):
    """One env per (run, agent), kept on the run object (replays reset it with each episode's seed)."""
    cache = run.__dict__.setdefault("_replay_envs", {})
    if agent not in cache:
        cache[agent] = run.make_env(agent)
    return cache[agent]


def replay_steps(run: TrainedRun, agent: int, ep: Episode, steps, rng: np.random.Generator,
                 masked: bool = False, max_steps: int = 100_000) -> float:
    """The agent's total reward of the episode replayed from the same seed: the recorded actions before the
    first of `steps` (sorted step indices), a uniform random legal action other than the agent's greedy one
    (if there is another) at each of `steps`, the agent's greedy policy at every other step from the first
    perturbed one on. With `masked` the agent's own steps follow the mask's explaining mode (m <= tau takes a
    random legal action; the quirk of StateMask's Pong replay), otherwise unmasked. With no steps and an
    episode recorded unmasked this is the recorded return."""
    steps = np.asarray(steps, np.int64).reshape(-1)
    if len(steps) and (steps.min() < 0 or steps.max() >= max(ep.length, 1) or (np.diff(steps) <= 0).any()):
        raise ValueError(f"replay_steps: steps {steps.tolist()} must be sorted, distinct and inside the episode "
                         f"of {ep.length} steps")
    first = int(steps[0]) if len(steps) else ep.length
    perturb = set(steps.tolist())
    env, pol = replay_env(run, agent), run.policies[agent]
    states = prefix_states(run, agent, ep)
    t0 = min(first, len(states) - 1) if states else 0
    if states:   # go on from the state before step t0 instead of replaying the recorded steps up to it
        snap, obs, legal, total = states[t0]
        env.restore(snap)
    else:
        obs, legal, _ = env.reset(seed=ep.seed)
        total = 0.0
    for t in range(t0, max_steps):
        if t < first:
            a = int(ep.actions[t])
        else:
            own = int(softmax_legal(pol.fast.logits(obs[None]), legal[None])[0].argmax())
            if t in perturb:
                a = random_other_legal(rng, legal, own)
            elif masked and pol.forward(obs[None])[2][0] <= pol.tau:
                idx = np.flatnonzero(legal)
                a = int(idx[rng.integers(len(idx))])
            else:
                a = own
        obs, legal, r, term, trunc, _ = env.step(a)
        total += r
        if term or trunc:
            break
    return float(total)


def prefix_states(run: TrainedRun, agent: int, ep: Episode) -> list | None:
    """The replay env's state before each step of `ep` replayed as recorded: [(snapshot, obs, legal, reward so
    far)], made once per episode and kept on the run (a replay that perturbs from step t restores the state
    before t instead of replaying the t steps before it: the fidelity test's largest cost). None where the env
    takes no snapshots."""
    cache = run.__dict__.setdefault("_prefix_states", {})
    key = (agent, ep.seed, ep.actions.tobytes())
    if key not in cache:
        env = replay_env(run, agent)
        obs, legal, _ = env.reset(seed=ep.seed)
        states, total = [], 0.0
        for t in range(ep.length):
            snap = env.snapshot()
            if snap is None:
                states = None
                break
            states.append((snap, obs, legal, total))
            obs, legal, r, term, trunc, _ = env.step(int(ep.actions[t]))
            total += r
            if term or trunc:
                break
        cache[key] = states
    return cache[key]


def replay_perturbed(run: TrainedRun, agent: int, ep: Episode, start: int, length: int,
                     rng: np.random.Generator, masked: bool = False, max_steps: int = 100_000) -> float:
    """`replay_steps` with the window start .. start+length-1 (the fidelity test's window mode)."""
    if start < 0 or length < 0 or start > ep.length:
        raise ValueError(f"replay_perturbed: window ({start}, {length}) outside the episode of {ep.length} steps")
    return replay_steps(run, agent, ep, np.arange(start, min(start + length, ep.length)), rng, masked, max_steps)


def reward_range(run: TrainedRun, agent: int, episodes: list[Episode]) -> float:
    """d_max, the scale of a return change: gates, its number of gates (the most an agent can lose);
    connect4, 2 (a win turned into a loss); otherwise the largest |return| of the recorded episodes
    (at least 1e-6)."""
    env = replay_env(run, agent)
    name = env.spec.name
    if name == "gates":
        return float(max(len(env.critical_steps), 1))
    if name == "connect4":
        return 2.0
    return max(max((abs(e.ret) for e in episodes), default=0.0), RET_FLOOR)


def keyed_rng(seed: int, *keys: int) -> np.random.Generator:
    """A generator seeded by (seed, *keys): the same keys give the same random numbers (common random numbers)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, *[int(k) & 0xFFFFFFFF for k in keys]])


def fidelity_modes(setting: str) -> tuple[str, ...]:
    """explain.fidelity_mode -> the modes to run: window, topk, or both."""
    return FIDELITY_MODES if setting == "both" else (setting,)


def _perturbed_and_control(mode: str, imp: np.ndarray, kf: float, seed: int, agent: int, i: int, ki: int,
                           replay: int = 0):
    """(steps, control steps) of one (episode, K) in `mode`; the control has as many steps, seeded by
    (seed, agent, episode, K, count, replay) so that it is the same for every method choosing that many."""
    L = len(imp)
    if mode == "window":
        s, n = select_window(imp, kf)
        cs = int(keyed_rng(seed, 2, agent, i, ki, n, replay).integers(L - n + 1))
        return np.arange(s, s + n), np.arange(cs, cs + n)
    steps = select_topk(imp, kf)
    control = np.sort(keyed_rng(seed, 3, agent, i, ki, len(steps), replay).choice(L, len(steps), replace=False))
    return steps, control


def fidelity_rows(run: TrainedRun, agent: int, episodes: list[Episode], importance: dict[str, list[np.ndarray]],
                  k_fracs, seed: int = 0, d_max: float | None = None, modes=("window",), replays: int = 1) -> list[dict]:
    """Rows of fidelity.csv for one agent: every method (importance[method][i] is the importance over
    episodes[i]) at every K, in every mode of `modes` (window, topk). Common random numbers: the random
    actions of a replay are seeded by (seed, agent, episode, K, the perturbed steps, replay), so methods that
    choose the same steps get the same perturbed return, and the control (random steps, as many) is shared by
    every method choosing that many. With `replays` R > 1 each row averages R replays (each with its own
    random actions, and the control with its own random steps): `return_perturbed` and both drops are means
    over the R, `fidelity_score` takes p_d from the mean |R - R'|."""
    unknown = [m for m in modes if m not in FIDELITY_MODES]
    if unknown or not modes:
        raise ValueError(f"fidelity_rows: modes {list(modes)!r}; allowed: {', '.join(FIDELITY_MODES)}")
    if replays < 1:
        raise ValueError(f"fidelity_rows: replays={replays} must be >= 1")
    d_max = reward_range(run, agent, episodes) if d_max is None else d_max
    rows, cache = [], {}

    def replay(i, ep, ki, steps, r):
        key = (i, ki, steps.tobytes(), r)
        if key not in cache:
            rng = keyed_rng(seed, 1, agent, i, ki, zlib.crc32(steps.tobytes()), len(steps), r)
            cache[key] = replay_steps(run, agent, ep, steps, rng)
        return cache[key]

    for method, imps in importance.items():
        for i, ep in enumerate(episodes):
            imp = np.asarray(imps[i], np.float64)
            if len(imp) != ep.length:
                raise ValueError(f"{method}: importance of episode {i} has {len(imp)} steps, the episode {ep.length}")
            for mode in modes:
                for ki, kf in enumerate(k_fracs):
                    pert, ctrl = [], []
                    for r in range(replays):
                        steps, control = _perturbed_and_control(mode, imp, kf, seed, agent, i, ki, r)
                        pert.append(replay(i, ep, ki, steps, r))
                        ctrl.append(replay(i, ep, ki, control, r))
                    r_pert, r_ctrl = float(np.mean(pert)), float(np.mean(ctrl))
                    change = float(np.mean(np.abs(ep.ret - np.asarray(pert))))
                    rows.append({"method": method, "agent": agent, "mode": mode, "k": float(kf), "episode": i,
                                 "window_start": int(steps[0]), "window_len": len(steps), "episode_len": ep.length,
                                 "return_orig": ep.ret, "return_perturbed": r_pert,
                                 "reward_drop_pct": reward_drop_pct(ep.ret, r_pert),
                                 "fidelity_score": fidelity_score(ep.ret, ep.ret - change, len(steps), ep.length, d_max),
                                 "control_reward_drop_pct": reward_drop_pct(ep.ret, r_ctrl)})
    return rows



def _agent_rows(agent: int) -> list[dict]:
    j = job()
    return fidelity_rows(j["run"], agent, j["episodes"][agent], {m: imp[agent] for m, imp in j["importance"].items()},
                         j["k_fracs"], seed=j["seed"], d_max=j["d_max"][agent], modes=j["modes"], replays=j["replays"])


def fidelity_all_agents(run: TrainedRun, episodes: dict[int, list[Episode]], importance: dict[str, dict],
                        k_fracs, seed: int, modes, replays: int, workers: int) -> list[dict]:
    """`fidelity_rows` of every agent, in agent order, in `workers` processes (explain/parallel.py)."""
    agents = list(episodes)
    d_max = {a: reward_range(run, a, episodes[a]) for a in agents}
    per_agent = map_agents(_agent_rows, agents, workers, run=run, episodes=episodes, importance=importance,
                           k_fracs=list(k_fracs), seed=seed, d_max=d_max, modes=tuple(modes), replays=replays)
    return [row for rows in per_agent for row in rows]
