"""Explaining a finished run, start to end: record evaluation episodes of every agent, score them with every
method of `explain.methods` (MAGIC-MASK's own mask and the baselines, all on the same episodes and seeds), run
the fidelity test, compute the metrics and write RUN_DIR/report/:

  importance.csv         method,episode,seed,agent,step,importance,action,reward,true_critical
  fidelity.csv           explain.fidelity.FIDELITY_COLUMNS
  critical_states.jsonl  the explain.top_states highest-m states per agent (observation, action, frame)
  frames/*.png           rendered frames of those states (where the env renders)
  metrics.json           {method: {metric: value}}: every metric of explain.metrics, fit_seconds, score_seconds
  summary.json           the run's facts (env, agents, episodes, seeds, d_max), run-level metrics, per-agent
                         metrics per method, timings, failed explainers and notes

The explained episodes are UNMASKED (the agent's own greedy behaviour, seeds first_seed + i); the same seeds
are also played in the mask's explaining mode (m <= tau perturbs) for the reward preservation. Explanation
only: the HTML report and the command line are the application's (magicmask.api, magicmask.cli).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.image
import numpy as np

from magicmask.explain import metrics as MX
from magicmask.explain import team as TM
from magicmask.explain.baselines import make_explainer
from magicmask.explain.baselines.base import one_thread
from magicmask.explain.episodes import Episode, TrainedRun, load_run, record_episodes
from magicmask.explain.parallel import job, map_agents
from magicmask.explain.fidelity import FIDELITY_COLUMNS, fidelity_all_agents, fidelity_modes, replay_env, reward_range
from magicmask.explain.tables import write_csv
from magicmask.protocol import config as C

IMPORTANCE_COLUMNS = ("method", "episode", "seed", "agent", "step", "importance", "action", "reward", "true_critical")
INTER_AGENT_EPISODES = 20   # episodes per agent pooled for the inter-agent fidelity (N agents x this many episodes)

Episodes = dict[int, list[Episode]]   # agent -> its recorded episodes


@dataclass
class Scores:
    """What the explainers produced: importance[method][agent][episode] (one value per step), the fitted
    explainers (the metrics score more episodes with them), their cost, and the methods that failed."""
    importance: dict[str, dict[int, list[np.ndarray]]] = field(default_factory=dict)
    explainers: dict[str, dict[int, object]] = field(default_factory=dict)
    cost: dict[str, dict[str, float]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        return list(self.importance)


def write_explanations(run_dir, checkpoint=None, overrides=(), *, methods: list[str] | None = None,
                       explainer_factory=None, log=print) -> Path:
    """Explain a finished run and write its files; returns RUN_DIR/report. `explainer_factory(name, cfg)`
    replaces explain.baselines.make_explainer and `methods` the configured list (tests: explainers outside
    the config's list). torch runs on one thread throughout: every forward here is a batch of one or a few
    states, and a second thread made them ~50x slower on a busy 2-core machine (measured: 7 ms instead of
    ~0.1 ms per layer)."""
    with one_thread():
        return _explain(Path(run_dir), checkpoint, overrides, methods, explainer_factory or make_explainer, log)


def _explain(run_dir: Path, checkpoint, overrides, methods, factory, log) -> Path:
    t_start = time.perf_counter()
    run = load_explained_run(run_dir, checkpoint, overrides)
    ec, agents = run.cfg.explain, list(range(run.cfg.run.agents))
    methods = list(methods) if methods else configured_methods(run.cfg)
    k_fracs = [float(x) for x in ec.k_fractions.split(",") if x.strip()]
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    timing = {}

    t = time.perf_counter()
    unmasked = {a: record_episodes(run, a, ec.episodes, ec.first_seed, masked=False) for a in agents}
    masked = {a: record_episodes(run, a, ec.episodes, ec.first_seed, masked=True) for a in agents}
    timing["record_seconds"] = time.perf_counter() - t
    log(f"explain: {len(agents)} agents x {ec.episodes} episodes recorded (unmasked and masked) "
        f"in {timing['record_seconds']:.1f} s; methods {', '.join(methods)}")

    scores = score_methods(run, unmasked, methods, factory, log)

    t = time.perf_counter()
    fid_rows = fidelity_all_agents(run, unmasked, scores.importance, k_fracs, ec.seed, fidelity_modes(ec.fidelity_mode),
                                   ec.replays, ec.workers)
    timing["fidelity_seconds"] = time.perf_counter() - t
    log(f"explain: fidelity test ({len(fid_rows)} rows of {ec.replays} replay(s), K = {k_fracs}) in {timing['fidelity_seconds']:.1f} s")

    t = time.perf_counter()
    team_rows, team_d_max = team_window(run, scores, k_fracs)
    if team_rows:
        timing["team_window_seconds"] = time.perf_counter() - t
        log(f"explain: team window ({ec.team_episodes} team episodes, {len(team_rows)} rows) "
            f"in {timing['team_window_seconds']:.1f} s")

    # the expensive rows on disk first: a failure further on loses none of them
    write_csv(out / "importance.csv", IMPORTANCE_COLUMNS, importance_rows(scores, unmasked))
    write_csv(out / "fidelity.csv", FIDELITY_COLUMNS, fid_rows + team_rows)

    t = time.perf_counter()
    run_metrics = run_level_metrics(unmasked, masked)
    per_method, per_agent = method_metrics(run, unmasked, scores, fid_rows, team_rows, k_fracs, run_metrics)
    timing["metrics_seconds"] = time.perf_counter() - t

    t = time.perf_counter()
    write_jsonl(out / "critical_states.jsonl", critical_states(run, unmasked, ec.top_states, out))
    timing["frames_seconds"] = time.perf_counter() - t
    timing["total_seconds"] = time.perf_counter() - t_start
    summary = summary_doc(run, unmasked, scores, k_fracs, run_metrics, per_agent, timing, team_d_max)
    (out / "metrics.json").write_text(json.dumps(json_safe(per_method), indent=1))
    (out / "summary.json").write_text(json.dumps(json_safe(summary), indent=1))
    log(f"explain: wrote {out}/importance.csv, fidelity.csv, critical_states.jsonl, metrics.json, summary.json "
        f"({timing['total_seconds']:.1f} s)")
    return out


def load_explained_run(run_dir: Path, checkpoint=None, overrides=()) -> TrainedRun:
    """The run's policies with `section.field=value` overrides applied to its config (validated; the
    policies take the new mask.tau)."""
    run = load_run(run_dir, checkpoint)
    for item in overrides or ():
        C.set_value(run.cfg, *C.parse_override(item))
    C.validate(run.cfg)
    for p in run.policies:
        p.tau = run.cfg.mask.tau
    return run


def configured_methods(cfg: C.Config) -> list[str]:
    """explain.methods in the canonical order of EXPLAINERS, so every run's tables list methods alike."""
    chosen = {m.strip() for m in cfg.explain.methods.split(",")}
    return [m for m in C.EXPLAINERS if m in chosen]


# ---------------- explainers ----------------
def score_methods(run: TrainedRun, unmasked: Episodes, methods: list[str], factory, log=print) -> Scores:
    """Fit one explainer per method and agent, score every unmasked episode. One broken explainer must not
    take the others down: its error is kept in `errors` and the method left out."""
    scores = Scores()
    for m in methods:
        t = time.perf_counter()
        try:
            imps, fitted, cost = score_method(run, unmasked, m, factory)
        except Exception as e:
            scores.errors[m] = f"{type(e).__name__}: {e}"
            log(f"explain: {m}: FAILED: {scores.errors[m]}")
            continue
        scores.importance[m], scores.explainers[m], scores.cost[m] = imps, fitted, cost
        log(f"explain: {m}: fitted and scored in {time.perf_counter() - t:.1f} s "
            f"(fit {cost['fit_seconds']:.1f} s, score {cost['score_seconds']:.2f} s)")
    return scores


def score_method(run: TrainedRun, unmasked: Episodes, method: str, factory):
    """(importance per agent, fitted explainer per agent, its cost) of one method; an importance of the wrong
    length or not finite is an error. Agents are fitted in explain.workers processes (explain/parallel.py). The
    cost, summed over agents: fit_seconds and score_seconds (the explainers' own timings are preferred to the
    wall clock: they leave out shared set-up), fit_env_steps (env steps the fit took beyond the recorded
    episodes) and n_params (trainable parameters of its models)."""
    agents = list(unmasked)
    results = map_agents(_fit_and_score, agents, run.cfg.explain.workers, run=run, unmasked=unmasked,
                         method=method, factory=factory)
    importance = {a: r[0] for a, r in zip(agents, results)}
    fitted = {a: r[1] for a, r in zip(agents, results)}
    cost = {k: sum(r[2][k] for r in results) for k in ("fit_seconds", "score_seconds", "fit_env_steps", "n_params")}
    return importance, fitted, cost


def _fit_and_score(a: int):
    """One agent's explainer of job()["method"], fitted on its episodes, and its importance over them."""
    j = job()
    run, episodes, method = j["run"], j["unmasked"][a], j["method"]
    ex = j["factory"](method, run.cfg)
    t0 = time.perf_counter()
    ex.fit(run, a, episodes, run.cfg.explain.seed + a)
    wall_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    importance = [_checked_importance(ex, ep, method, a, i) for i, ep in enumerate(episodes)]
    wall_score = time.perf_counter() - t0
    cost = {"fit_seconds": float(getattr(ex, "fit_seconds", 0.0) or wall_fit),
            "score_seconds": float(getattr(ex, "score_seconds", 0.0) or wall_score),
            "fit_env_steps": int(getattr(ex, "env_steps", 0)), "n_params": int(getattr(ex, "n_params", 0))}
    return importance, ex, cost


def _checked_importance(ex, ep: Episode, method: str, agent: int, i: int) -> np.ndarray:
    v = np.asarray(ex.importance(ep), np.float64).reshape(-1)
    if len(v) != ep.length or not np.isfinite(v).all():
        raise ValueError(f"{method}: agent {agent} episode {i}: importance of shape {v.shape} "
                         f"(finite: {bool(np.isfinite(v).all())}) for an episode of {ep.length} steps")
    return v


# ---------------- fidelity in a team ----------------
def team_window(run: TrainedRun, scores: Scores, k_fracs) -> tuple[list[dict], float | None]:
    """Rows (agent "team") of the fidelity test's team window and its d_max; none outside cooperative shared
    worlds or with explain.team_episodes=0."""
    ec, agents = run.cfg.explain, range(run.cfg.run.agents)
    if ec.team_episodes <= 0 or not TM.is_team_world(run):
        return [], None
    team_eps = TM.record_team_episodes(run, ec.team_episodes, ec.first_seed)
    views = [[TM.agent_view(run, tep, a) for a in agents] for tep in team_eps]   # (world steps, Episode) per agent

    def team_importance(m: str, i: int) -> np.ndarray:
        per_agent = [(steps, scores.explainers[m][a].importance(ep)) for a, (steps, ep) in zip(agents, views[i])]
        return TM.team_importance(team_eps[i].length, per_agent)

    team_imp = {m: [team_importance(m, i) for i in range(len(team_eps))] for m in scores.methods}
    d_max = TM.team_d_max(team_eps)
    return TM.team_fidelity_rows(run, team_eps, team_imp, k_fracs, seed=ec.seed, d_max=d_max), d_max


# ---------------- metrics ----------------
def run_level_metrics(unmasked: Episodes, masked: Episodes) -> dict[str, float]:
    """The metrics of the run itself, the same for every method."""
    return {"final_average_reward": MX.final_average_reward(unmasked),
            "final_average_reward_masked": MX.final_average_reward(masked),
            "reward_preservation": MX.reward_preservation(unmasked, masked),
            "perturbed_share": float(np.mean([e.perturbed.mean() for eps in masked.values() for e in eps]))}


def method_metrics(run: TrainedRun, unmasked: Episodes, scores: Scores, fid_rows, team_rows, k_fracs,
                   run_metrics) -> tuple[dict, dict]:
    """({method: metrics}, {method: {agent: metrics}}). Reward preservation is MAGIC-MASK's alone (its m <= tau
    rule); the inter-agent fidelity scores the first INTER_AGENT_EPISODES episodes of every agent with every
    agent's explainer."""
    agents = list(unmasked)
    pooled = [ep for a in agents for ep in unmasked[a][:INTER_AGENT_EPISODES]]
    spaces = {a: (unmasked[a][0].obs.shape[1:], unmasked[a][0].legal.shape[1]) for a in agents}
    views: dict[tuple[int, int], Episode] = {}

    def view(a: int, ep: Episode) -> Episode:   # ep as agent a would have seen it, computed once
        if (a, id(ep)) not in views:
            views[(a, id(ep))] = MX.reannotate(run, a, ep)
        return views[(a, id(ep))]

    pi_cache: dict = {}
    per_method, per_agent = {}, {}
    ec = run.cfg.explain
    for m in scores.methods:
        imp, rows_m = scores.importance[m], [r for r in fid_rows if r["method"] == m]
        p, r = MX.precision_recall_mean(unmasked, imp)
        mm = {"final_average_reward": run_metrics["final_average_reward"],
              "reward_preservation": run_metrics["reward_preservation"] if m == "magicmask" else float("nan"),
              "kl_divergence": MX.kl_divergence(run, unmasked, imp, pi_cache), "precision_at_k": p, "recall_at_2k": r,
              **MX.fidelity_summary(rows_m, k_fracs, seed=ec.seed)}
        if team_rows:
            team_m = MX.fidelity_summary([r for r in team_rows if r["method"] == m], k_fracs, seed=ec.seed)
            mm.update({f"team_{k}": v for k, v in team_m.items()})
        t0 = time.perf_counter()
        mm["inter_agent_fidelity"] = MX.inter_agent_fidelity(
            lambda a, ep, m=m: scores.explainers[m][a].importance(view(a, ep)), agents, pooled, spaces)
        mm["inter_agent_seconds"] = time.perf_counter() - t0
        if m != "magicmask" and "magicmask" in scores.methods:   # MAGIC-MASK against this method, paired
            mm.update(MX.drop_versus([r for r in fid_rows if r["method"] == "magicmask"], rows_m, k_fracs,
                                     "magicmask_minus_drop", seed=ec.seed))
        per_method[m] = {**mm, **scores.cost[m]}
        per_agent[m] = {a: agent_metrics(run, a, unmasked[a], imp[a], rows_m, k_fracs, pi_cache) for a in agents}
    return per_method, per_agent


def agent_metrics(run: TrainedRun, agent: int, episodes: list[Episode], importance: list[np.ndarray],
                  fid_rows, k_fracs, pi_cache: dict) -> dict[str, float]:
    """One method's metrics on one agent's episodes (fid_rows: that method's fidelity rows)."""
    p, r = MX.precision_recall_mean({agent: episodes}, {agent: importance})
    return {"final_average_reward": MX.final_average_reward({agent: episodes}),
            "kl_divergence": MX.kl_divergence(run, {agent: episodes}, {agent: importance}, pi_cache),
            "precision_at_k": p, "recall_at_2k": r,
            **MX.fidelity_summary([x for x in fid_rows if x["agent"] == agent], k_fracs, seed=run.cfg.explain.seed)}


# ---------------- files ----------------
def importance_rows(scores: Scores, unmasked: Episodes):
    """Rows of importance.csv: one per method, agent, episode and step."""
    for m in scores.methods:
        for a, episodes in unmasked.items():
            for i, ep in enumerate(episodes):
                tc = ep.true_critical
                for s in range(ep.length):
                    yield {"method": m, "episode": i, "seed": ep.seed, "agent": a, "step": s,
                           "importance": float(scores.importance[m][a][i][s]), "action": int(ep.actions[s]),
                           "reward": float(ep.rewards[s]), "true_critical": None if tc is None else int(bool(tc[s]))}


def critical_states(run: TrainedRun, unmasked: Episodes, top: int, out: Path) -> list[dict]:
    """Per agent the `top` highest-m states of its unmasked episodes (ties: earlier episode, earlier step),
    each with its frame in out/frames/ where the env renders."""
    frames = out / "frames"
    frames.mkdir(parents=True, exist_ok=True)
    recs = []
    for a, eps in unmasked.items():
        env = replay_env(run, a)   # the fidelity test's replay env of this agent
        cand = [(-float(ep.m[t]), i, t) for i, ep in enumerate(eps) for t in range(ep.length)]
        for neg_m, i, t in sorted(cand)[:top]:
            ep = eps[i]
            name = f"agent{a}_ep{i}_step{t}.png"
            ok = write_frame(env, ep, t, frames / name)
            recs.append({"agent": a, "episode": i, "seed": ep.seed, "step": t, "importance": -neg_m,
                         "action": int(ep.actions[t]), "own_action": int(ep.own_actions[t]),
                         "reward": float(ep.rewards[t]),
                         "true_critical": None if ep.true_critical is None else bool(ep.true_critical[t]),
                         "value": float(ep.values[t]), "observation": np.asarray(ep.obs[t], np.float64).tolist(),
                         "obs_shape": list(np.shape(ep.obs[t])), "frame": name if ok else None})
    return recs


def write_frame(env, ep: Episode, step: int, path: Path) -> bool:
    """Replay the episode's recorded actions up to `step` and write env.render() there as a PNG; False when
    the env does not render."""
    env.reset(seed=ep.seed)
    for t in range(step):
        env.step(int(ep.actions[t]))
    img = env.render()
    if img is None:
        return False
    matplotlib.image.imsave(path, np.ascontiguousarray(np.asarray(img, np.uint8)))   # matplotlib: already a dependency
    return True


def summary_doc(run: TrainedRun, unmasked: Episodes, scores: Scores, k_fracs, run_metrics, per_agent, timing,
                team_d_max: float | None) -> dict:
    """summary.json: the run's facts, run-level and per-agent metrics, timings, failed explainers, notes."""
    cfg, ec = run.cfg, run.cfg.explain
    team_note = (f"{ec.team_episodes} team episodes, d_max {team_d_max:.6g} (rows with agent 'team'; "
                 "docs/metrics.md)" if team_d_max is not None else
                 "not computed: not a cooperative shared world, one agent, or explain.team_episodes=0 "
                 "(docs/metrics.md)")
    return {"run_dir": str(run.run_dir), "env": cfg.env.name, "agents": cfg.run.agents, "episodes": ec.episodes,
            "first_seed": ec.first_seed, "checkpoint_version": run.version, "tau": cfg.mask.tau,
            "shared_world": bool(replay_env(run, 0).spec.shared_world), "k_fractions": list(k_fracs),
            "methods": scores.methods,
            "d_max": {a: reward_range(run, a, eps) for a, eps in unmasked.items()},
            "run": run_metrics, "per_agent": per_agent, "errors": scores.errors, "timing": timing,
            "notes": {"episodes": "explained episodes are unmasked (greedy policy); seeds first_seed .. first_seed+M-1",
                      "reward_preservation": "MAGIC-MASK only (its m <= tau rule on the same seeds); null for "
                                             "post-hoc methods, whose importance needs the finished episode",
                      "team_window": team_note,
                      "inter_agent_fidelity": f"first {INTER_AGENT_EPISODES} episodes of every agent pooled"}}


def write_jsonl(path: Path, records: list[dict]) -> None:
    with open(path, "w") as f:
        for rec in records:
            f.write(json.dumps(json_safe(rec)) + "\n")


def json_safe(x):
    """NaN/inf -> None (JSON has neither), numpy scalars -> Python, keys -> str."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x
