"""The fidelity test (explainers.md, section 0; the conventions are stated in docs/metrics.md).

For an episode the agent played unmasked and an explainer's per-step importance over it:
  1. `select_window`: the top-k steps (k = max(1, floor(K * L))), their longest contiguous run;
  2. `replay_perturbed`: same env seed, the recorded actions before the window, inside it a uniform random
     legal action other than the agent's own greedy choice, after it the agent's greedy policy to the end;
  3. `fidelity_score` = log(p_d) - log(p_l), p_d = max(|R - R'| / d_max, 1e-3), p_l = l / L (higher is better);
  4. the same replay with a window of equal length at a seeded random start is the control.
`fidelity_rows` does this for one agent, every method and every K, and returns the rows of fidelity.csv.
"""
from __future__ import annotations

import math
import zlib

import numpy as np

from magicmask.models.action_selection import softmax_legal
from magicmask.explain.baselines.base import random_other_legal
from magicmask.explain.episodes import Episode, TrainedRun

FIDELITY_COLUMNS = ("method", "agent", "k", "episode", "window_start", "window_len", "episode_len", "return_orig",
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


def _env(run: TrainedRun, agent: int):
    """One env per (run, agent), kept on the run object (replays reset it with each episode's seed)."""
    cache = run.__dict__.setdefault("_replay_envs", {})
    if agent not in cache:
        cache[agent] = run.make_env(agent)
    return cache[agent]


def replay_perturbed(run: TrainedRun, agent: int, ep: Episode, start: int, length: int,
                     rng: np.random.Generator, masked: bool = False, max_steps: int = 100_000) -> float:
    """The agent's total reward of the episode replayed from the same seed: the recorded actions before
    `start`, a uniform random legal action other than the agent's greedy one (if there is another) at steps
    start .. start+length-1, then the agent's greedy policy to the end. With `masked` the agent finishes in
    the mask's explaining mode (m <= tau takes a random legal action; the quirk of StateMask's Pong
    replay), otherwise unmasked. With length 0 and an episode recorded unmasked this is the recorded return."""
    if start < 0 or length < 0 or start > ep.length:
        raise ValueError(f"replay_perturbed: window ({start}, {length}) outside the episode of {ep.length} steps")
    env, pol = _env(run, agent), run.policies[agent]
    obs, legal, _ = env.reset(seed=ep.seed)
    total = 0.0
    for t in range(max_steps):
        if t < start:
            a = int(ep.actions[t])
        else:
            logits, _, m, _ = pol.forward(obs[None])
            own = int(softmax_legal(logits, legal[None])[0].argmax())
            in_window = t < start + length
            if in_window:
                a = random_other_legal(rng, legal, own)
            elif masked and m[0] <= pol.tau:
                idx = np.flatnonzero(legal)
                a = int(idx[rng.integers(len(idx))])
            else:
                a = own
        obs, legal, r, term, trunc, _ = env.step(a)
        total += r
        if term or trunc:
            break
    return float(total)


def reward_range(run: TrainedRun, agent: int, episodes: list[Episode]) -> float:
    """d_max, the scale of a return change: gates, its number of gates (the most an agent can lose);
    connect4, 2 (a win turned into a loss); otherwise the largest |return| of the recorded episodes
    (at least 1e-6)."""
    env = _env(run, agent)
    name = env.spec.name
    if name == "gates":
        return float(max(len(env.critical_steps), 1))
    if name == "connect4":
        return 2.0
    return max(max((abs(e.ret) for e in episodes), default=0.0), RET_FLOOR)


def keyed_rng(seed: int, *keys: int) -> np.random.Generator:
    """A generator seeded by (seed, *keys): the same keys give the same random numbers (common random numbers)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, *[int(k) & 0xFFFFFFFF for k in keys]])


def fidelity_rows(run: TrainedRun, agent: int, episodes: list[Episode], importance: dict[str, list[np.ndarray]],
                  k_fracs, seed: int = 0, d_max: float | None = None) -> list[dict]:
    """Rows of fidelity.csv for one agent: every method (importance[method][i] is the importance over
    episodes[i]) at every K. Common random numbers: the random actions of a replay are seeded by
    (seed, agent, episode, K, window), so methods that choose the same window get the same perturbed
    return; the control window (same length, seeded random start) is seeded by (seed, agent, episode, K,
    length) and is therefore the same for every method choosing a window of that length."""
    d_max = reward_range(run, agent, episodes) if d_max is None else d_max
    rows, cache = [], {}

    def replay(i, ep, ki, s, n):
        key = (i, ki, s, n)
        if key not in cache:
            cache[key] = replay_perturbed(run, agent, ep, s, n, keyed_rng(seed, 1, agent, i, ki, s, n))
        return cache[key]

    for method, imps in importance.items():
        for i, ep in enumerate(episodes):
            imp = np.asarray(imps[i], np.float64)
            if len(imp) != ep.length:
                raise ValueError(f"{method}: importance of episode {i} has {len(imp)} steps, the episode {ep.length}")
            for ki, kf in enumerate(k_fracs):
                s, n = select_window(imp, kf)
                r_pert = replay(i, ep, ki, s, n)
                cs = int(keyed_rng(seed, 2, agent, i, ki, n).integers(ep.length - n + 1))
                r_ctrl = replay(i, ep, ki, cs, n)
                rows.append({"method": method, "agent": agent, "k": float(kf), "episode": i, "window_start": s,
                             "window_len": n, "episode_len": ep.length, "return_orig": ep.ret,
                             "return_perturbed": r_pert, "reward_drop_pct": reward_drop_pct(ep.ret, r_pert),
                             "fidelity_score": fidelity_score(ep.ret, r_pert, n, ep.length, d_max),
                             "control_reward_drop_pct": reward_drop_pct(ep.ret, r_ctrl)})
    return rows


def write_png(path, img: np.ndarray) -> None:
    """A minimal RGB(A) uint8 PNG writer (zlib, no extra dependency)."""
    img = np.ascontiguousarray(np.asarray(img, np.uint8))
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    h, w, c = img.shape
    if c not in (3, 4):
        raise ValueError(f"write_png: expected 3 or 4 channels, got {c}")
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + tag + data + zlib.crc32(tag + data).to_bytes(4, "big")
    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, 2 if c == 3 else 6, 0, 0, 0])
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
