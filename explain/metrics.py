"""The paper's metrics, computed from the recorded episodes, the explainers' importance and the fidelity rows.
Every formula is stated in docs/metrics.md; the function docstrings repeat the short form."""
from __future__ import annotations

import math
from typing import Callable, Iterable

import numpy as np
from scipy.stats import spearmanr

from magicmask.models.action_selection import softmax_legal
from magicmask.models.critical_scores import precision_recall
from magicmask.explain.episodes import Episode, TrainedRun
from magicmask.explain.stats import bootstrap_ci, paired_differences

NAN = float("nan")


def _mean(xs) -> float:
    xs = [float(x) for x in xs if x is not None and not math.isnan(float(x))]
    return float(np.mean(xs)) if xs else NAN


def k_label(k: float) -> str:
    """0.1 -> 'k10' (the suffix of the per-K metric names)."""
    return f"k{int(round(100 * float(k)))}"


# ---------------- returns ----------------
def final_average_reward(unmasked: dict[int, list[Episode]]) -> float:
    """Mean over agents of the mean unmasked (greedy) return over the agent's M recorded episodes."""
    return _mean(np.mean([e.ret for e in eps]) for eps in unmasked.values() if eps)


def reward_preservation(unmasked: dict[int, list[Episode]], masked: dict[int, list[Episode]]) -> float:
    """Mean over agents of (mean masked return) / (mean unmasked return) on the same seeds; NaN for an agent
    whose mean unmasked return is 0."""
    vals = []
    for a, eps in unmasked.items():
        r0 = float(np.mean([e.ret for e in eps]))
        r1 = float(np.mean([e.ret for e in masked.get(a, [])])) if masked.get(a) else NAN
        vals.append(r1 / r0 if abs(r0) > 1e-12 else NAN)
    return _mean(vals)


# ---------------- KL divergence between the policy and the masked behaviour ----------------
def policy_probs(run: TrainedRun, agent: int, ep: Episode) -> np.ndarray:
    """pi(.|s_t) over the legal actions, [L, A], from the agent's policy on the episode's observations."""
    logits = run.policies[agent].forward(ep.obs)[0]
    return softmax_legal(logits, ep.legal)


def kept_steps(ep: Episode, importance: np.ndarray, n_keep: int) -> np.ndarray:
    """Bool [L]: the n_keep highest-importance steps (ties: the lower index first)."""
    keep = np.zeros(ep.length, bool)
    if n_keep > 0:
        keep[np.argsort(-np.asarray(importance, np.float64), kind="stable")[:n_keep]] = True
    return keep


def kl_policy_masked(pi: np.ndarray, legal: np.ndarray, keep: np.ndarray) -> float:
    """Mean over steps of KL(pi || mu), mu = pi where kept, else U (uniform over the legal actions):
    a kept step contributes 0, a perturbed one sum_a pi(a) log(pi(a) |L(s)|) = log|L(s)| - H(pi(.|s))."""
    p = np.clip(pi, 0.0, 1.0)
    n_legal = legal.sum(axis=1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p * n_legal[:, None]), 0.0)
    kl = np.where(keep, 0.0, terms.sum(axis=1))
    return float(kl.mean()) if len(kl) else NAN


def kl_divergence(run: TrainedRun, unmasked: dict[int, list[Episode]], importance: dict[int, list[np.ndarray]],
                  pi_cache: dict | None = None) -> float:
    """Mean over agents and over all steps of their unmasked episodes of KL(pi || mu_method). The method's
    masked behaviour keeps, in each episode, as many steps as MAGIC-MASK's rule does (n_keep = #{t: m_t > tau},
    so every method gets the same perturbation budget), namely its own n_keep highest-importance steps;
    for MAGIC-MASK itself (importance = m) these are exactly the steps with m > tau (up to ties at tau)."""
    pi_cache = {} if pi_cache is None else pi_cache
    vals = []
    for a, eps in unmasked.items():
        tau = run.policies[a].tau
        for i, ep in enumerate(eps):
            if (a, i) not in pi_cache:
                pi_cache[(a, i)] = policy_probs(run, a, ep)
            keep = kept_steps(ep, importance[a][i], int((ep.m > tau).sum()))
            vals.append((kl_policy_masked(pi_cache[(a, i)], ep.legal, keep), ep.length))
    if not vals:
        return NAN
    return float(sum(v * n for v, n in vals) / sum(n for _, n in vals))


# ---------------- ground truth ----------------
def precision_recall_mean(unmasked: dict[int, list[Episode]], importance: dict[int, list[np.ndarray]]) -> tuple[float, float]:
    """Means over every agent's episodes that have ground truth (NaN when none has)."""
    ps, rs = [], []
    for a, eps in unmasked.items():
        for i, ep in enumerate(eps):
            p, r = precision_recall(importance[a][i], ep.true_critical)
            if p is not None:
                ps.append(p)
                rs.append(r)
    return _mean(ps), _mean(rs)


# ---------------- inter-agent fidelity ----------------
def spearman(x, y) -> float | None:
    """Spearman rank correlation (scipy.stats.spearmanr, ties at their mean rank); None when either vector is
    constant or shorter than 2 (the correlation is undefined)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(spearmanr(x, y).statistic)


def reannotate(run: TrainedRun, agent: int, ep: Episode) -> Episode:
    """The episode as seen by another agent: the same states, actions and rewards, with that agent's own
    greedy actions, V(s) and mask keep-probability m at each state."""
    logits, v, m, _ = run.policies[agent].forward(ep.obs)
    own = softmax_legal(logits, ep.legal).argmax(axis=1).astype(np.int64)
    return Episode(agent=agent, seed=ep.seed, obs=ep.obs, legal=ep.legal, actions=ep.actions, own_actions=own,
                   rewards=ep.rewards, m=np.asarray(m, np.float32), values=np.asarray(v, np.float32),
                   perturbed=ep.perturbed, true_critical=ep.true_critical, masked=ep.masked, stats=ep.stats)


def inter_agent_fidelity(score: Callable[[int, Episode], np.ndarray], agents: Iterable[int],
                         pooled: list[Episode], spaces: dict[int, tuple] | None = None) -> float:
    """Mean Spearman rank correlation between two agents' importance on a common set of states: for every
    episode of the pooled set (episodes of every agent) and every pair of agents (a, b) that can read it, the
    correlation of score(a, ep) and score(b, ep) (each agent's explainer on the same states, as importance over
    that episode's steps); the mean over pairs and episodes, skipping pairs where either vector is constant.
    `spaces`: each agent's (observation shape, action count); an agent reads only episodes of its own space (in
    Dou Dizhu the two peasants compare on each other's games, the landlord's 790 values fit no peasant's
    network). NaN when no pair could be compared."""
    agents = list(agents)
    vals = []
    for ep in pooled:
        space = (ep.obs.shape[1:], ep.legal.shape[1])
        readers = [a for a in agents if spaces is None or spaces[a] == space]
        imp = {a: np.asarray(score(a, ep), np.float64) for a in readers}
        for i, a in enumerate(readers):
            for b in readers[i + 1:]:
                r = spearman(imp[a], imp[b])
                if r is not None:
                    vals.append(r)
    return _mean(vals)


# ---------------- fidelity-test summaries ----------------
def _rows_at(rows: list[dict], mode: str, kf: float) -> list[dict]:
    """The fidelity rows of one mode and K."""
    return [r for r in rows if r.get("mode", "window") == mode and abs(float(r["k"]) - float(kf)) < 1e-9]


def _scored(rows: list[dict]) -> list[dict]:
    """The rows whose episode had a return to lose (|return_orig| >= 1e-6): a drop in % is defined only there."""
    return [r for r in rows if abs(float(r["return_orig"])) >= 1e-6]


def fidelity_summary(rows: list[dict], k_fracs, seed: int = 0) -> dict:
    """Per mode and K, from the fidelity rows of one method (keys of the window mode unprefixed, of the topk
    mode prefixed `topk_`):
      reward_drop_pct_kNN, control_reward_drop_pct_kNN: means of the per-row values over the rows with
        |return_orig| >= 1e-6; reward_drop_pct_kNN_ci their 95% bootstrap interval over episodes;
      drop_minus_control_kNN and _ci: the mean paired difference (drop - control on the same episode) and its
        95% bootstrap interval: above 0 means the method's steps matter more than random ones, significantly;
      return_drop_kNN (mean of return_orig - return_perturbed over all rows), fidelity_score_kNN (the mean of
        the per-episode scores) and window_len_kNN (mean number of perturbed steps)."""
    out = {}
    for mode in sorted({r.get("mode", "window") for r in rows}):
        prefix = "" if mode == "window" else f"{mode}_"
        for kf in k_fracs:
            rs = _rows_at(rows, mode, kf)
            ok = _scored(rs)
            drop = [float(r["reward_drop_pct"]) for r in ok]
            ctrl = [float(r["control_reward_drop_pct"]) for r in ok]
            diff = paired_differences(drop, ctrl)
            sfx = k_label(kf)
            out[f"{prefix}reward_drop_pct_{sfx}"] = _mean(drop)
            out[f"{prefix}reward_drop_pct_{sfx}_ci"] = bootstrap_ci(drop, seed=seed)
            out[f"{prefix}control_reward_drop_pct_{sfx}"] = _mean(ctrl)
            out[f"{prefix}drop_minus_control_{sfx}"] = _mean(diff)
            out[f"{prefix}drop_minus_control_{sfx}_ci"] = bootstrap_ci(diff, seed=seed)
            out[f"{prefix}return_drop_{sfx}"] = _mean(float(r["return_orig"]) - float(r["return_perturbed"]) for r in rs)
            out[f"{prefix}fidelity_score_{sfx}"] = _mean(r["fidelity_score"] for r in rs)
            out[f"{prefix}window_len_{sfx}"] = _mean(r["window_len"] for r in rs)
            out[f"{prefix}episodes_{sfx}"] = len(ok)
    return out


def drop_versus(rows_a: list[dict], rows_b: list[dict], k_fracs, name: str, seed: int = 0) -> dict:
    """Per mode and K, method a's drop minus method b's on the same episodes (paired by agent and episode, rows
    with |return_orig| >= 1e-6): `{name}_kNN` the mean difference and `{name}_kNN_ci` its 95% bootstrap interval
    over episodes (topk mode prefixed `topk_`). Above 0: a's steps matter more than b's, significantly."""
    out = {}
    for mode in sorted({r.get("mode", "window") for r in rows_a}):
        prefix = "" if mode == "window" else f"{mode}_"
        for kf in k_fracs:
            a, b = ({(r["agent"], r["episode"]): float(r["reward_drop_pct"]) for r in _scored(_rows_at(rows, mode, kf))}
                    for rows in (rows_a, rows_b))
            both = sorted(a.keys() & b.keys())
            diff = paired_differences([a[e] for e in both], [b[e] for e in both])
            out[f"{prefix}{name}_{k_label(kf)}"] = _mean(diff)
            out[f"{prefix}{name}_{k_label(kf)}_ci"] = bootstrap_ci(diff, seed=seed)
    return out
