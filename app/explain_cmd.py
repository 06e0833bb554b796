"""`magicmask explain RUN_DIR`: record evaluation episodes of every agent, explain them with every method of
`explain.methods` (MAGIC-MASK's own mask and the baselines, all on the same episodes and seeds), run the
fidelity test, compute the metrics and write RUN_DIR/report/:

  importance.csv         method,episode,seed,agent,step,importance,action,reward,true_critical
  fidelity.csv           explain.fidelity.FIDELITY_COLUMNS
  critical_states.jsonl  the explain.top_states highest-m states per agent (observation, action, frame)
  frames/*.png           rendered frames of those states (where the env renders)
  metrics.json           {method: {metric: value}}: every metric of explain.metrics, fit_seconds, score_seconds
  summary.json           the run's facts (env, agents, episodes, seeds, d_max), run-level metrics, per-agent
                         metrics per method, timings, failed explainers and notes
  index.html             the report (explain.report, when present)

The explained episodes are UNMASKED (the agent's own greedy behaviour, seeds first_seed + i); the same seeds
are also played in the mask's explaining mode (m <= tau perturbs) for the reward preservation.
"""
from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import yaml

from magicmask.explain import metrics as MX
from magicmask.explain import team as TM
from magicmask.explain.baselines.base import one_thread
from magicmask.explain.episodes import Episode, TrainedRun, load_run, record_episodes
from magicmask.explain.fidelity import FIDELITY_COLUMNS, _env, fidelity_rows, reward_range, write_png
from magicmask.protocol import config as C

IMPORTANCE_COLUMNS = ("method", "episode", "seed", "agent", "step", "importance", "action", "reward", "true_critical")
INTER_AGENT_EPISODES = 20   # episodes per agent pooled for the inter-agent fidelity (N agents x this many episodes)


# ---------------- explainers ----------------
class _FallbackExplainer:
    """Used only while explain/baselines is not installed: MAGIC-MASK (importance = m), ValueMax (|V(s)|) and
    Random (uniform noise, seeded), with the baselines' interface."""

    def __init__(self, name: str, cfg: C.Config):
        if name not in ("magicmask", "valuemax", "random"):
            raise ValueError(f"explainer {name!r} needs explain/baselines, which is not installed")
        self.name, self.fit_seconds, self.score_seconds = name, 0.0, 0.0
        self._rng = np.random.default_rng(cfg.explain.seed)

    def fit(self, run, agent, episodes, seed):
        self._rng = np.random.default_rng([seed, 0xF00D])

    def importance(self, ep: Episode) -> np.ndarray:
        t = time.perf_counter()
        out = {"magicmask": lambda: ep.m, "valuemax": lambda: np.abs(ep.values),
               "random": lambda: self._rng.random(ep.length)}[self.name]()
        self.score_seconds += time.perf_counter() - t
        return np.asarray(out, np.float64)


def make_explainer(name: str, cfg: C.Config):
    """explain.baselines.make_explainer, or the fallback above when explain/baselines does not exist yet."""
    try:
        from magicmask.explain.baselines import make_explainer as mk
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith("explain.baselines"):
            raise
        return _FallbackExplainer(name, cfg)
    return mk(name, cfg)


def parse_floats(text: str) -> list[float]:
    return [float(x) for x in str(text).split(",") if x.strip()]


def apply_overrides(run: TrainedRun, overrides) -> None:
    for item in overrides or []:
        if "=" not in item:
            raise C.ConfigError(f"--set {item!r}: expected section.field=value")
        key, value = item.split("=", 1)
        C.set_value(run.cfg, key.strip(), yaml.safe_load(value) if value.strip() else "")
    C.validate(run.cfg)
    for p in run.policies:
        p.tau = run.cfg.mask.tau


def _clean(x):
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def _write_csv(path: Path, columns, rows) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _frame(run: TrainedRun, agent: int, ep: Episode, step: int, path: Path) -> bool:
    """Replay the episode's recorded actions up to `step` and write env.render() there as a PNG."""
    env = _env(run, agent)
    env.reset(seed=ep.seed)
    for t in range(step):
        env.step(int(ep.actions[t]))
    img = env.render()
    if img is None:
        return False
    write_png(path, img)
    return True


def critical_states(run: TrainedRun, unmasked: dict[int, list[Episode]], top: int, out: Path) -> list[dict]:
    """Per agent the `top` highest-m states of its unmasked episodes (ties: earlier episode, earlier step)."""
    frames = out / "frames"
    frames.mkdir(parents=True, exist_ok=True)
    recs = []
    for a, eps in unmasked.items():
        cand = [(-float(ep.m[t]), i, t) for i, ep in enumerate(eps) for t in range(ep.length)]
        for neg_m, i, t in sorted(cand)[:top]:
            ep = eps[i]
            name = f"agent{a}_ep{i}_step{t}.png"
            ok = _frame(run, a, ep, t, frames / name)
            recs.append({"agent": a, "episode": i, "seed": ep.seed, "step": t, "importance": -neg_m,
                         "action": int(ep.actions[t]), "own_action": int(ep.own_actions[t]),
                         "reward": float(ep.rewards[t]),
                         "true_critical": None if ep.true_critical is None else bool(ep.true_critical[t]),
                         "value": float(ep.values[t]), "observation": np.asarray(ep.obs[t], np.float64).tolist(),
                         "obs_shape": list(np.shape(ep.obs[t])), "frame": name if ok else None})
    return recs


# ---------------- the command ----------------
def run_explain(run_dir, checkpoint=None, overrides=(), explainer_factory=None, report: bool = True,
                log=print, methods: list[str] | None = None) -> Path:
    """Explain a finished run; returns RUN_DIR/report. `explainer_factory(name, cfg)` replaces
    make_explainer and `methods` replaces explain.methods (tests: explainers outside the config's list).
    torch runs on one thread throughout: every forward here is a batch of one or a few states, and a second
    thread made them ~50x slower on a busy 2-core machine (measured: 7 ms instead of ~0.1 ms per layer)."""
    with one_thread():
        return _explain(run_dir, checkpoint, overrides, explainer_factory, report, log, methods)


def _explain(run_dir, checkpoint, overrides, explainer_factory, report, log, methods) -> Path:
    t_start = time.perf_counter()
    run_dir = Path(run_dir)
    run = load_run(run_dir, checkpoint)
    apply_overrides(run, overrides)
    cfg, ec = run.cfg, run.cfg.explain
    methods = list(methods) if methods else [m.strip() for m in ec.methods.split(",") if m.strip()]
    k_fracs = parse_floats(ec.k_fractions)
    agents = list(range(cfg.run.agents))
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    factory = explainer_factory or make_explainer
    timing = {}

    t = time.perf_counter()
    unmasked = {a: record_episodes(run, a, ec.episodes, ec.first_seed, masked=False) for a in agents}
    masked = {a: record_episodes(run, a, ec.episodes, ec.first_seed, masked=True) for a in agents}
    timing["record_seconds"] = time.perf_counter() - t
    log(f"explain: {len(agents)} agents x {ec.episodes} episodes recorded (unmasked and masked) "
        f"in {timing['record_seconds']:.1f} s; methods {', '.join(methods)}")

    importance: dict[str, dict[int, list[np.ndarray]]] = {}
    explainers: dict[str, dict[int, object]] = {}
    cost: dict[str, dict[str, float]] = {}
    errors: dict[str, str] = {}
    for m in methods:
        t = time.perf_counter()
        try:
            importance[m], explainers[m] = {}, {}
            fit_s = score_s = 0.0
            for a in agents:
                ex = factory(m, cfg)
                t0 = time.perf_counter()
                ex.fit(run, a, unmasked[a], ec.seed + a)
                wall_fit = time.perf_counter() - t0
                t0 = time.perf_counter()
                imps = []
                for i, ep in enumerate(unmasked[a]):
                    v = np.asarray(ex.importance(ep), np.float64).reshape(-1)
                    if len(v) != ep.length or not np.isfinite(v).all():
                        raise ValueError(f"{m}: agent {a} episode {i}: importance of shape {v.shape} "
                                         f"(finite: {bool(np.isfinite(v).all())}) for an episode of {ep.length} steps")
                    imps.append(v)
                wall_score = time.perf_counter() - t0
                importance[m][a], explainers[m][a] = imps, ex
                fit_s += float(getattr(ex, "fit_seconds", 0.0) or wall_fit)
                score_s += float(getattr(ex, "score_seconds", 0.0) or wall_score)
            cost[m] = {"fit_seconds": fit_s, "score_seconds": score_s}
            log(f"explain: {m}: fitted and scored in {time.perf_counter() - t:.1f} s "
                f"(fit {fit_s:.1f} s, score {score_s:.2f} s)")
        except Exception as e:   # one broken explainer must not take the others down
            errors[m] = f"{type(e).__name__}: {e}"
            importance.pop(m, None)
            explainers.pop(m, None)
            log(f"explain: {m}: FAILED: {errors[m]}")
    ok_methods = [m for m in methods if m in importance]

    t = time.perf_counter()
    fid_rows: list[dict] = []
    for a in agents:
        d_max = reward_range(run, a, unmasked[a])
        fid_rows += fidelity_rows(run, a, unmasked[a], {m: importance[m][a] for m in ok_methods}, k_fracs,
                                  seed=ec.seed, d_max=d_max)
    timing["fidelity_seconds"] = time.perf_counter() - t
    log(f"explain: fidelity test ({len(fid_rows)} rows, K = {k_fracs}) in {timing['fidelity_seconds']:.1f} s")

    t = time.perf_counter()
    team_rows, team_d_max = [], None
    if ec.team_episodes > 0 and TM.is_team_world(run):
        team_eps = TM.record_team_episodes(run, ec.team_episodes, ec.first_seed)
        team_views = {(a, i): TM.agent_view(run, tep, a) for i, tep in enumerate(team_eps) for a in agents}
        team_imp = {m: [TM.team_importance(tep.length, [(team_views[(a, i)][0],
                                                         explainers[m][a].importance(team_views[(a, i)][1]))
                                                        for a in agents]) for i, tep in enumerate(team_eps)]
                    for m in ok_methods}
        team_d_max = TM.team_d_max(team_eps)
        team_rows = TM.team_fidelity_rows(run, team_eps, team_imp, k_fracs, seed=ec.seed, d_max=team_d_max)
        timing["team_window_seconds"] = time.perf_counter() - t
        log(f"explain: team window ({len(team_eps)} team episodes, {len(team_rows)} rows) "
            f"in {timing['team_window_seconds']:.1f} s")

    # ---- metrics ----
    t = time.perf_counter()
    run_metrics = {"final_average_reward": MX.final_average_reward(unmasked),
                   "final_average_reward_masked": MX.final_average_reward(masked),
                   "reward_preservation": MX.reward_preservation(unmasked, masked),
                   "perturbed_share": float(np.mean([e.perturbed.mean() for eps in masked.values() for e in eps]))}
    pooled = [ep for a in agents for ep in unmasked[a][:INTER_AGENT_EPISODES]]
    views: dict[tuple[int, int], Episode] = {}

    def view(a: int, ep: Episode) -> Episode:
        key = (a, id(ep))
        if key not in views:
            views[key] = MX.reannotate(run, a, ep)
        return views[key]

    pi_cache: dict = {}
    per_method, per_agent = {}, {}
    for m in ok_methods:
        rows_m = [r for r in fid_rows if r["method"] == m]
        p, r = MX.precision_recall_mean(unmasked, importance[m])
        mm = {"final_average_reward": run_metrics["final_average_reward"],
              "reward_preservation": run_metrics["reward_preservation"] if m == "magicmask" else float("nan"),
              "kl_divergence": MX.kl_divergence(run, unmasked, importance[m], pi_cache),
              "precision_at_k": p, "recall_at_2k": r}
        mm.update(MX.fidelity_summary(rows_m, k_fracs))
        if team_rows:
            mm.update({f"team_{k}": v for k, v in MX.fidelity_summary(
                [r for r in team_rows if r["method"] == m], k_fracs).items()})
        t0 = time.perf_counter()
        mm["inter_agent_fidelity"] = MX.inter_agent_fidelity(
            lambda a, ep, m=m: explainers[m][a].importance(view(a, ep)), agents, pooled)
        mm["inter_agent_seconds"] = time.perf_counter() - t0
        mm.update(cost[m])
        per_method[m] = mm
        per_agent[m] = {}
        for a in agents:
            pa, ra = MX.precision_recall_mean({a: unmasked[a]}, {a: importance[m][a]})
            d = {"final_average_reward": MX.final_average_reward({a: unmasked[a]}),
                 "kl_divergence": MX.kl_divergence(run, {a: unmasked[a]}, {a: importance[m][a]}, pi_cache),
                 "precision_at_k": pa, "recall_at_2k": ra}
            d.update(MX.fidelity_summary([x for x in rows_m if x["agent"] == a], k_fracs))
            per_agent[m][a] = d
    timing["metrics_seconds"] = time.perf_counter() - t

    # ---- files ----
    imp_rows = []
    for m in ok_methods:
        for a in agents:
            for i, ep in enumerate(unmasked[a]):
                tc = ep.true_critical
                for s in range(ep.length):
                    imp_rows.append({"method": m, "episode": i, "seed": ep.seed, "agent": a, "step": s,
                                     "importance": f"{importance[m][a][i][s]:.6g}", "action": int(ep.actions[s]),
                                     "reward": f"{float(ep.rewards[s]):.6g}",
                                     "true_critical": "" if tc is None else int(bool(tc[s]))})
    _write_csv(out / "importance.csv", IMPORTANCE_COLUMNS, imp_rows)
    _write_csv(out / "fidelity.csv", FIDELITY_COLUMNS,
               [{k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()} for r in fid_rows + team_rows])
    t = time.perf_counter()
    states = critical_states(run, unmasked, ec.top_states, out)
    with open(out / "critical_states.jsonl", "w") as f:
        for rec in states:
            f.write(json.dumps(_clean(rec)) + "\n")
    timing["frames_seconds"] = time.perf_counter() - t
    timing["total_seconds"] = time.perf_counter() - t_start
    spec = _env(run, 0).spec
    doc = {"run_dir": str(run_dir), "env": cfg.env.name, "agents": len(agents), "episodes": ec.episodes,
           "first_seed": ec.first_seed, "checkpoint_version": run.version, "tau": cfg.mask.tau,
           "shared_world": bool(spec.shared_world), "k_fractions": k_fracs, "methods": ok_methods,
           "d_max": {a: reward_range(run, a, unmasked[a]) for a in agents},
           "run": run_metrics, "per_agent": per_agent, "errors": errors, "timing": timing,
           "notes": {"episodes": "explained episodes are unmasked (greedy policy); seeds first_seed .. first_seed+M-1",
                     "reward_preservation": "MAGIC-MASK only (its m <= tau rule on the same seeds); null for "
                                            "post-hoc methods, whose importance needs the finished episode",
                     "team_window": (f"{ec.team_episodes} team episodes, d_max {team_d_max:.6g} (rows with agent "
                                     f"'team'; docs/metrics.md)" if team_rows else
                                     "not computed: not a cooperative shared world, one agent, or "
                                     "explain.team_episodes=0 (docs/metrics.md)"),
                     "inter_agent_fidelity": f"first {INTER_AGENT_EPISODES} episodes of every agent pooled"}}
    (out / "metrics.json").write_text(json.dumps(_clean(per_method), indent=1))
    (out / "summary.json").write_text(json.dumps(_clean(doc), indent=1))
    log(f"explain: wrote {out}/importance.csv, fidelity.csv, critical_states.jsonl, metrics.json, summary.json "
        f"({timing['total_seconds']:.1f} s)")
    if report:
        try:
            from magicmask.report import write_report
        except ModuleNotFoundError as e:
            if not (e.name or "").startswith("magicmask.report"):
                raise
            log("explain: explain/report.py is not installed; no HTML report written")
        else:
            path = write_report(run_dir)
            log(f"explain: report: {path}")
    return out


def summary_table(ms: dict) -> str:
    """A short plain-text table of the headline metrics of metrics.json (printed by the command)."""
    keys = ["precision_at_k", "reward_drop_pct_k10", "control_reward_drop_pct_k10", "fidelity_score_k10",
            "kl_divergence", "inter_agent_fidelity", "fit_seconds"]
    lines = ["method".ljust(12) + "".join(k[:22].rjust(24) for k in keys)]
    for m, d in ms.items():
        lines.append(m.ljust(12) + "".join(("-" if d.get(k) is None else f"{d[k]:.4g}").rjust(24) for k in keys))
    return "\n".join(lines)
