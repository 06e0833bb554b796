"""The paper's metrics, computed from the recorded episodes, the explainers' importance and the fidelity rows.
Every formula is stated in docs/metrics.md; the function docstrings repeat the short form."""
from __future__ import annotations

import math
from typing import Callable, Iterable

import numpy as np

from magicmask.models.action_selection import softmax_legal
from magicmask.explain.episodes import Episode, TrainedRun

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
def precision_recall(importance: np.ndarray, critical: np.ndarray | None) -> tuple[float | None, float | None]:
    """(precision@k, recall@2k) of one episode, k = its number of true critical steps; ranking by importance
    descending, ties to the lower step index. None when the episode has no ground truth or no critical step."""
    if critical is None:
        return None, None
    crit = np.asarray(critical, bool)
    k = int(crit.sum())
    if k == 0:
        return None, None
    order = np.argsort(-np.asarray(importance, np.float64), kind="stable")
    return float(crit[order[:k]].mean()), float(crit[order[:2 * k]].sum() / k)


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
def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties get their average rank (as scipy.stats.rankdata's default)."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    ranks = np.empty(len(x), np.float64)
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(x, y) -> float | None:
    """Spearman rank correlation; None when either vector is constant (the correlation is undefined)."""
    rx, ry = rankdata(x), rankdata(y)
    if len(rx) < 2 or rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def reannotate(run: TrainedRun, agent: int, ep: Episode) -> Episode:
    """The episode as seen by another agent: the same states, actions and rewards, with that agent's own
    greedy actions, V(s) and mask keep-probability m at each state."""
    logits, v, m, _ = run.policies[agent].forward(ep.obs)
    own = softmax_legal(logits, ep.legal).argmax(axis=1).astype(np.int64)
    return Episode(agent=agent, seed=ep.seed, obs=ep.obs, legal=ep.legal, actions=ep.actions, own_actions=own,
                   rewards=ep.rewards, m=np.asarray(m, np.float32), values=np.asarray(v, np.float32),
                   perturbed=ep.perturbed, true_critical=ep.true_critical, masked=ep.masked, stats=ep.stats)


def inter_agent_fidelity(score: Callable[[int, Episode], np.ndarray], agents: Iterable[int],
                         pooled: list[Episode]) -> float:
    """Mean Spearman rank correlation between two agents' importance on a common set of states: for every
    episode of the pooled set (episodes of every agent) and every pair of agents (a, b), the correlation of
    score(a, ep) and score(b, ep) (each agent's explainer on the same states, as importance over that
    episode's steps); the mean over pairs and episodes, skipping pairs where either vector is constant.
    NaN with fewer than 2 agents or when every pair was constant."""
    agents = list(agents)
    if len(agents) < 2:
        return NAN
    vals = []
    for ep in pooled:
        imp = {a: np.asarray(score(a, ep), np.float64) for a in agents}
        for i, a in enumerate(agents):
            for b in agents[i + 1:]:
                r = spearman(imp[a], imp[b])
                if r is not None:
                    vals.append(r)
    return _mean(vals)


# ---------------- fidelity-test summaries ----------------
def fidelity_summary(rows: list[dict], k_fracs) -> dict[str, float]:
    """Per K (from the fidelity rows of one method): reward_drop_pct_kNN and control_reward_drop_pct_kNN
    (means of the per-row values over rows with |return_orig| >= 1e-6), return_drop_kNN
    (mean of return_orig - return_perturbed over all rows), fidelity_score_kNN (the mean of the per-episode
    scores) and window_len_kNN (mean window length)."""
    out = {}
    for kf in k_fracs:
        lab = k_label(kf)
        rs = [r for r in rows if abs(float(r["k"]) - float(kf)) < 1e-9]
        ok = [r for r in rs if abs(float(r["return_orig"])) >= 1e-6]
        out[f"reward_drop_pct_{lab}"] = _mean(r["reward_drop_pct"] for r in ok)
        out[f"control_reward_drop_pct_{lab}"] = _mean(r["control_reward_drop_pct"] for r in ok)
        out[f"return_drop_{lab}"] = _mean(float(r["return_orig"]) - float(r["return_perturbed"]) for r in rs)
        out[f"fidelity_score_{lab}"] = _mean(r["fidelity_score"] for r in rs)
        out[f"window_len_{lab}"] = _mean(r["window_len"] for r in rs)
    return out
