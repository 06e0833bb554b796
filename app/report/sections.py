"""The report's sections, one function each: from the inputs to the numbers and pictures a section shows, rendered
through its template, templates/section_<name>.html. A section without its input says what is missing instead."""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
from markupsafe import Markup

from magicmask.explain.episodes import load_run
from magicmask.explain.saliency import saliency as mask_saliency
from magicmask.explain.stats import mean_sd, significant
from magicmask.models.critical_scores import precision_at_k
from magicmask.report import figures, pictures
from magicmask.report.figures import ImageDir
from magicmask.report.html import Section, note, render
from magicmask.report.read import Trace, agent_key, is_png, method_key, to_float

# id (stable: tests and links look it up) -> (title, navigation label, what the section shows)
SECTIONS = {
    "importance": ("Importance over time", "Importance",
                   "Importance of every step over time per agent and method (each method scaled to 0..1 within the "
                   "episode), for the first episodes, with the smallest K's perturbed window shaded and the truly "
                   "critical steps marked; below, the mean over all episodes."),
    "critical-states": ("Top critical states", "Critical states",
                        "The steps each agent's mask rated most critical, as pictures (the env's rendered frame where "
                        "it draws, and a labelled drawing of the observation for gates), with their importance and "
                        "action."),
    "fidelity": ("Fidelity against K", "Fidelity",
                 "Fidelity score log(p_d) - log(p_l) (higher is better) and reward drop in percent after perturbing "
                 "the top-K window, against K, for every method; dashed: a random window of the same length "
                 "(control)."),
    "comparison": ("Comparison of methods", "Comparison",
                   "Every method's metrics side by side (metrics.json), with its wall-clock cost to fit and to score, "
                   "and the cross-run comparison table when `magicmask compare` wrote one."),
    "precision": ("Precision at k", "Precision at k",
                  "Precision at k of each method's ranking against the environment's true critical steps, k = the "
                  "number of truly critical steps in the episode (mean over episodes)."),
    "saliency": ("Observation saliency", "Saliency",
                 "Which parts of the observation move the mask: the mean absolute gradient of the keep-probability m "
                 "with respect to each observation feature (a heatmap on the frame for image observations), over "
                 "{episodes} unmasked episodes per agent (1 for image observations) played from the checkpoint."),
}
SECTION_IDS = tuple(SECTIONS)


def _section(sid: str, body, **what_args) -> Section:
    title, label, what = SECTIONS[sid]
    return Section(sid, title, what.format(**what_args), body, label)


def gates_layout(cfg, agent: int):
    """(length, n_actions, noise, shared gates, private gate) of a gates env, or None."""
    if cfg is None or getattr(cfg.env, "name", "") != "gates":
        return None
    try:
        from magicmask.actors.envs import make_env
        env = make_env(cfg, agent)
        return env.length, env.n_actions, env.noise, tuple(env.shared_gates), env.private_gate
    except Exception:   # noqa: BLE001 - the states are then drawn as plain observations
        return None


def _windows_by_episode(fid: list[dict]) -> dict:
    """(method, agent, episode) -> (k, start, length) of the smallest K's perturbed window."""
    out = {}
    for r in fid:
        if math.isnan(r.get("window_start", float("nan"))) or math.isnan(r.get("window_len", float("nan"))):
            continue
        key = (r.get("method", ""), r["agent"], r["episode"])
        if key not in out or r["k"] < out[key][0]:
            out[key] = (r["k"], int(r["window_start"]), int(r["window_len"]))
    return out


def importance(traces: list[Trace] | None, fid: list[dict] | None, images: ImageDir, n_show: int,
               missing: str) -> Section:
    """Per agent: the first `n_show` episodes step by step, and the mean over all of them."""
    if not traces:
        return _section("importance", note(missing))
    windows = _windows_by_episode(fid or [])
    methods = sorted({t.method for t in traces}, key=method_key)
    by = {(t.method, t.agent, t.episode): t for t in traces}
    agents = []
    for agent in sorted({t.agent for t in traces}, key=agent_key):
        episodes = sorted({t.episode for t in traces if t.agent == agent})
        lanes = figures.importance_lanes(agent, episodes[:n_show], methods, by, windows)
        mean = figures.importance_mean(agent, episodes, methods, by)
        agents.append({"agent": agent, "lanes": images.save(lanes, f"importance-agent{agent}"),
                       "mean": images.save(mean, f"importance-mean-agent{agent}")})
    return _section("importance", render("section_importance.html", agents=agents))


def _state_pictures(s: dict, env_name: str, layout, report_dir: Path, images: ImageDir) -> list[dict]:
    """A gates drawing and the rendered frame where there are; else a drawing of the observation."""
    pics = []
    stem = f"a{s.get('agent')}-e{s.get('episode')}-s{s.get('step')}"
    if env_name == "gates":
        fig = pictures.gates_state(s, layout)
        if fig is not None:
            pics.append({"src": images.save(fig, f"gates-{stem}"), "alt": "gates state", "cls": "state"})
    frame = s.get("frame")
    if frame:
        rel = frame if str(frame).startswith("frames/") else f"frames/{frame}"
        if is_png(report_dir / rel):
            pics.append({"src": rel, "alt": "rendered frame", "cls": "frame"})
    if not pics:
        fig = pictures.observation(s, env_name)
        if fig is not None:
            pics.append({"src": images.save(fig, f"obs-{stem}"), "alt": "observation", "cls": "state"})
    return pics


def critical_states(states: list[dict] | None, report_dir: Path, cfg, images: ImageDir, top: int,
                    missing: str) -> Section:
    """Per agent, the `top` states of critical_states.jsonl by importance, as picture cards."""
    if not states:
        return _section("critical-states", note(missing))
    env_name = getattr(getattr(cfg, "env", None), "name", "") if cfg is not None else ""
    by_agent = defaultdict(list)
    for s in states:
        by_agent[str(s.get("agent", ""))].append(s)
    agents = []
    for agent in sorted(by_agent, key=agent_key):
        layout = gates_layout(cfg, int(agent)) if env_name == "gates" and agent.lstrip("-").isdigit() else None
        best = sorted(by_agent[agent], key=lambda s: -to_float(s.get("importance"), -np.inf))[:top]
        cards = [{"pictures": _state_pictures(s, env_name, layout, report_dir, images),
                  "episode": s.get("episode", "?"), "seed": s.get("seed", "?"), "step": s.get("step", "?"),
                  "importance": to_float(s.get("importance")), "action": s.get("action", "?"),
                  "true_critical": s.get("true_critical")} for s in best]
        agents.append({"agent": agent, "cards": cards})
    return _section("critical-states", render("section_critical_states.html", gates=env_name == "gates",
                                              agents=agents))


def fidelity(fid: list[dict] | None, images: ImageDir, missing: str) -> Section:
    """Per group (individual agents, the team's joint window): a figure against K and a row per method."""
    if not fid:
        return _section("fidelity", note(missing))
    methods = sorted({r.get("method", "") for r in fid}, key=method_key)
    ks = sorted({r["k"] for r in fid if math.isfinite(r["k"])})
    groups = [("individual agents", [r for r in fid if agent_key(r["agent"])[0] == 0]),
              ("team (joint window)", [r for r in fid if agent_key(r["agent"])[0] == 1])]
    rows, figs = [], []
    for label, sub in groups:
        if not sub:
            continue
        stats = {}
        for method in methods:
            rows_m = [r for r in sub if r.get("method") == method]
            if not rows_m:
                continue
            per_k = [[r for r in rows_m if r["k"] == k] for k in ks]
            stats[method] = tuple([mean_sd(r.get(col, float("nan")) for r in sel) for sel in per_k]
                                  for col in ("fidelity_score", "reward_drop_pct", "control_reward_drop_pct"))
            rows.append({"group": label, "method": method, "n": len(rows_m), "cells": list(zip(*stats[method]))})
        fig = figures.fidelity(label, ks, stats, methods)
        figs.append({"label": label.capitalize(), "src": images.save(fig, f"fidelity-{label.split()[0]}"),
                     "alt": f"fidelity {label}"})
    return _section("fidelity", render("section_fidelity.html", figures=figs, ks=ks, rows=rows))


def with_interval(d: dict, key: str):
    """A metric's value, or 'value [lo, hi]' with + / - when its 95% interval (`<key>_ci`, docs/metrics.md)
    lies above / below 0: what is significant is marked where it is read."""
    v, ci = d.get(key), d.get(f"{key}_ci")
    if not (isinstance(ci, list) and len(ci) == 2 and isinstance(v, (int, float))):
        return v
    lo, hi = (float("nan") if x is None else float(x) for x in ci)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return v
    mark = significant([lo, hi])
    return Markup(f"{v:.3g} [{lo:.3g}, {hi:.3g}]" + (f" <b title='95% interval excludes 0'>{mark}</b>" if mark else ""))


def comparison(metrics: dict | None, compare_md: str | None, compare_csv: list[list[str]] | None, missing: str,
               errors: dict | None = None) -> Section:
    """metrics.json as a table (method per column) with the wall-clock costs, failed explainers, compare.md/csv."""
    if not (metrics or errors or compare_md or compare_csv):
        return _section("comparison", note(missing))
    methods = sorted(metrics or {}, key=method_key)

    def cells(key):
        return [with_interval(metrics[m], key) if isinstance(metrics[m], dict) else None for m in methods]
    timing = ("fit_seconds", "score_seconds")
    names = list(dict.fromkeys(k for m in methods if isinstance(metrics[m], dict) for k in metrics[m]
                               if k not in timing and not k.endswith("_ci")))
    rows = [{"name": n, "derived": False, "cells": cells(n)} for n in names]
    rows += [{"name": label, "derived": True, "cells": cells(key)}
             for key, label in zip(timing, ("fit wall-clock (s)", "score wall-clock (s)"))]
    rows.append({"name": "total wall-clock (s)", "derived": True,
                 "cells": [sum(to_float(metrics[m].get(k), 0.0) for k in timing) if isinstance(metrics[m], dict)
                           else None for m in methods]})
    return _section("comparison", render("section_comparison.html", methods=methods, rows=rows,
                                         errors=[f"{k}: {v}" for k, v in (errors or {}).items()],
                                         compare_md=compare_md, compare_csv=compare_csv))


def precision(traces: list[Trace] | None, images: ImageDir) -> Section:
    """Precision at k per method and agent over the episodes with ground truth."""
    known = [t for t in (traces or []) if t.true_critical is not None]
    if not known:
        return _section("precision", note("no ground truth: this environment does not report true critical steps "
                                          "(true_critical is empty in importance.csv)."))
    methods = sorted({t.method for t in known}, key=method_key)
    agents = sorted({t.agent for t in known}, key=agent_key)
    vals: dict[tuple, list[float]] = defaultdict(list)
    for t in known:
        p = precision_at_k(t.importance, t.true_critical)
        if p is not None:
            vals[(t.method, t.agent)].append(p)
            vals[(t.method, "all")].append(p)
    means = {key: float(np.mean(v)) for key, v in vals.items() if v}
    rows = [{"method": m, "per_agent": [means.get((m, a)) for a in agents], "mean": means.get((m, "all")),
             "n": len(vals[(m, "all")])} for m in methods]
    fig = figures.precision(methods, agents, means, [means.get((m, "all"), 0.0) for m in methods])
    return _section("precision", render("section_precision.html", src=images.save(fig, "precision"),
                                        agents=agents, rows=rows))


def feature_labels(cfg, agent: int, n: int) -> list[str]:
    """Names of the n observation features: gates' step one-hot, cue and noise; else their indices."""
    lay = gates_layout(cfg, agent)
    if lay is not None:
        L, A, noise = lay[:3]
        if L + A + noise == n:
            return ([f"step {i}" for i in range(L)] + [f"cue {i}" for i in range(A)]
                    + [f"noise {i}" for i in range(noise)])
    return [str(i) for i in range(n)]


def saliency(run_dir: Path, run, images: ImageDir, episodes: int) -> Section:
    """The mask's observation saliency per agent (explain.saliency), from `run` or the run's checkpoint."""
    if run is None:
        try:
            run = load_run(run_dir)
        except Exception as e:   # noqa: BLE001 - any reason the checkpoint cannot be used goes on the page
            return _section("saliency", note(f"saliency not available: the run's checkpoint could not be loaded "
                                             f"({type(e).__name__}: {e})."), episodes=episodes)
    cfg, env_name = run.cfg, run.cfg.env.name
    first_seed = int(getattr(getattr(cfg, "explain", None), "first_seed", 0) or 0)   # explain's own episodes
    agents, error = [], None
    try:
        image = bool(getattr(run.policies[0].nets, "image_shape", None))
        for agent in range(len(run.policies)):
            # image observations: one episode (long, and a CNN per step), else `episodes`
            s = mask_saliency(run, agent, 1 if image else episodes, first_seed)
            if s.obs.ndim >= 3 or (env_name == "connect4" and s.all_steps.size == pictures.C4_SIZE):
                fig, alt = pictures.saliency_heatmap(agent, s.all_steps, s.obs, s.m, env_name), "saliency heatmap"
            else:
                labels = feature_labels(cfg, agent, s.all_steps.size)
                fig, alt = figures.saliency_bars(agent, s.all_steps, s.critical, labels), "saliency"
            agents.append({"agent": agent, "src": images.save(fig, f"saliency-agent{agent}"), "alt": alt})
    except Exception as e:   # noqa: BLE001
        error = f"saliency failed: {type(e).__name__}: {e}"
    return _section("saliency", render("section_saliency.html", agents=agents, error=error), episodes=episodes)
