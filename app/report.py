"""The visual report: `RUN_DIR/report/index.html`, one self-contained page readable offline.

`write_report(run_dir)` reads what `magicmask explain` / `compare` left in `RUN_DIR/report/`
(importance.csv, fidelity.csv, critical_states.jsonl, metrics.json, compare.md / compare.csv, frames/)
and draws, with matplotlib's Agg canvas (no pyplot, no global backend switch), PNG files under
`report/img/` that the page links relatively. No script, font or stylesheet comes from outside; the
only script is a small inline one that counts images which failed to load (`body[data-broken-images]`,
read by the tests through headless Chromium).

Sections (element ids are stable, tests look them up): `importance`, `critical-states`, `fidelity`,
`comparison`, `precision`, `saliency`. A missing input file makes its section say so instead of failing;
the saliency section needs the run's checkpoint (through `load_run`) and says why when it cannot load it.

Only a few episodes per agent are plotted step by step; all the others enter aggregates (mean importance
by step, fidelity means, precision at k), so the page stays quick to build for 100s of episodes.
"""
from __future__ import annotations

import csv
import datetime as _dt
import html
import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

METHOD_ORDER = ("magicmask", "statemask", "edge", "lazymdp", "valuemax", "random")
METHOD_COLOURS = {"magicmask": "#d62728", "statemask": "#1f77b4", "edge": "#2ca02c", "lazymdp": "#9467bd",
                  "valuemax": "#8c564b", "random": "#7f7f7f"}
_EXTRA_COLOURS = ("#e377c2", "#17becf", "#bcbd22", "#ff7f0e")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

SECTION_IDS = ("importance", "critical-states", "fidelity", "comparison", "precision", "saliency")


# ----------------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------------
@dataclass
class Trace:
    """One (method, agent, episode) importance series, ordered by step."""
    method: str
    agent: str
    episode: int
    seed: str
    steps: np.ndarray
    importance: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    true_critical: np.ndarray | None


def _agent_key(a: str):
    """Numeric agents first in numeric order, then named ones (e.g. 'team')."""
    try:
        return (0, int(a), "")
    except (TypeError, ValueError):
        return (1, 0, str(a))


def _method_key(m: str):
    return (METHOD_ORDER.index(m), m) if m in METHOD_ORDER else (len(METHOD_ORDER), m)


def _float(x, default=float("nan")) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return default


def _bool_or_none(x: str):
    s = str(x).strip().lower()
    if s in ("true", "1", "yes"):
        return True
    if s in ("false", "0", "no"):
        return False
    return None


def read_importance(path: Path) -> list[Trace]:
    """importance.csv -> one Trace per (method, agent, episode)."""
    groups: dict[tuple, list] = defaultdict(list)
    seeds = {}
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return []
        col = {name.strip(): i for i, name in enumerate(header)}
        need = ("method", "episode", "agent", "step", "importance")
        missing = [n for n in need if n not in col]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}")
        im, ie, ia, ist, ii = (col[n] for n in need)
        iseed, iact, irew, itc = (col.get(n) for n in ("seed", "action", "reward", "true_critical"))
        for row in reader:
            if not row:
                continue
            key = (row[im], row[ia], int(float(row[ie])))
            if iseed is not None and key not in seeds:
                seeds[key] = row[iseed]
            groups[key].append((int(float(row[ist])), _float(row[ii]),
                                _float(row[iact]) if iact is not None else float("nan"),
                                _float(row[irew], 0.0) if irew is not None else 0.0,
                                _bool_or_none(row[itc]) if itc is not None else None))
    traces = []
    for (method, agent, episode), rows in groups.items():
        rows.sort(key=lambda r: r[0])
        tc = [r[4] for r in rows]
        traces.append(Trace(method, agent, episode, seeds.get((method, agent, episode), ""),
                            np.array([r[0] for r in rows]), np.nan_to_num(np.array([r[1] for r in rows], float)),
                            np.array([r[2] for r in rows]), np.array([r[3] for r in rows], float),
                            None if any(t is None for t in tc) else np.array(tc, bool)))
    traces.sort(key=lambda t: (_method_key(t.method), _agent_key(t.agent), t.episode))
    return traces


def read_fidelity(path: Path) -> list[dict]:
    out = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            r = dict(row)
            for k in ("k", "window_start", "window_len", "episode_len", "return_orig", "return_perturbed",
                      "reward_drop_pct", "fidelity_score", "control_reward_drop_pct"):
                if k in r:
                    r[k] = _float(r[k])
            r["episode"] = int(_float(row.get("episode"), -1))
            r["agent"] = str(row.get("agent", ""))
            out.append(r)
    ks = [r["k"] for r in out if math.isfinite(r.get("k", float("nan")))]
    if ks and max(ks) <= 1.0:   # K written as a fraction of the episode (explain.k_fractions): show percent
        for r in out:
            r["k"] = round(r["k"] * 100, 6)
    return out


def read_critical_states(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def precision_at_k(importance: np.ndarray, critical: np.ndarray) -> float | None:
    """Share of the k most important steps that are truly critical, k = number of truly critical steps
    (the same definition as actors.evaluation.precision_at_k: stable ranking, ties by step order)."""
    k = int(critical.sum())
    if k == 0:
        return None
    top = np.argsort(-importance, kind="stable")[:k]
    return float(critical[top].mean())


def is_png(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(8) == PNG_MAGIC
    except OSError:
        return False


# ----------------------------------------------------------------------------------------------------
# drawing helpers (matplotlib's object API on an Agg canvas: no pyplot state, thread- and import-safe)
# ----------------------------------------------------------------------------------------------------
def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


class _Images:
    """Saves figures as PNG files under report/img/ and hands back their relative paths."""

    def __init__(self, report_dir: Path):
        self.dir = report_dir / "img"
        self.dir.mkdir(parents=True, exist_ok=True)
        for old in self.dir.glob("*.png"):   # pictures of an earlier report of this run
            old.unlink(missing_ok=True)
        self.n = 0

    def save(self, fig, stem: str) -> str:
        self.n += 1
        name = f"{self.n:03d}-{re.sub(r'[^A-Za-z0-9_-]+', '_', stem)}.png"
        fig.savefig(self.dir / name, dpi=100, facecolor="white")   # callers lay out (tight_layout) first
        return f"img/{name}"


def _colour(method: str, methods: list[str]) -> str:
    if method in METHOD_COLOURS:
        return METHOD_COLOURS[method]
    extra = [m for m in methods if m not in METHOD_COLOURS]
    return _EXTRA_COLOURS[extra.index(method) % len(_EXTRA_COLOURS)] if method in extra else "#333333"


def _norm01(x: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(x)), float(np.max(x))
    return np.zeros_like(x, float) if hi - lo < 1e-12 else (x - lo) / (hi - lo)


# ----------------------------------------------------------------------------------------------------
# HTML helpers
# ----------------------------------------------------------------------------------------------------
def _e(x) -> str:
    return html.escape(str(x))


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if math.isnan(v):
            return "–"
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 10 ** -digits):
            return f"{v:.{digits}g}"
        return f"{v:.{digits}f}"
    if isinstance(v, (dict, list)):
        return json.dumps(v)[:120]
    return str(v)


def _table(header: list[str], rows: list[list], cls: str = "") -> str:
    h = "".join(f"<th>{_e(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{c if isinstance(c, _Raw) else _e(_fmt(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f'<table class="{cls}"><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>'


class _Raw(str):
    """Already-escaped HTML for a table cell."""


def _img(src: str, alt: str, cls: str = "plot") -> str:
    return f'<img class="{cls}" src="{_e(src)}" alt="{_e(alt)}">'


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _markdown_to_html(md: str) -> str:
    """Just enough Markdown for compare.md: headings, pipe tables, paragraphs, `code`, **bold**."""
    def inline(s: str) -> str:
        s = _e(s)
        s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
        return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", s)

    out, lines, i = [], md.splitlines(), 0
    para: list[str] = []

    def flush():
        if para:
            out.append("<p>" + inline(" ".join(para)) + "</p>")
            para.clear()
    while i < len(lines):
        line = lines[i].rstrip()
        if line.lstrip().startswith("|"):
            flush()
            block = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                block.append(lines[i].strip())
                i += 1
            cells = [[c.strip() for c in r.strip("|").split("|")] for r in block]
            cells = [r for r in cells if not all(re.fullmatch(r":?-{2,}:?", c or "--") for c in r)]
            if cells:
                head = "".join(f"<th>{inline(c)}</th>" for c in cells[0])
                body = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in cells[1:])
                out.append(f'<table class="compare"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
            continue
        m = re.match(r"^(#{1,6})\s+(.*)$", line)
        if m:
            flush()
            level = min(len(m.group(1)) + 2, 6)
            out.append(f"<h{level}>{inline(m.group(2))}</h{level}>")
        elif not line.strip():
            flush()
        else:
            para.append(line.strip())
        i += 1
    flush()
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------------
# run info
# ----------------------------------------------------------------------------------------------------
def _load_cfg(run_dir: Path, run):
    if run is not None:
        return run.cfg
    try:
        from magicmask.protocol import config as C
        return C.load(run_dir / "config.yaml", environ={}) if (run_dir / "config.yaml").is_file() else None
    except Exception:   # noqa: BLE001 - the header then shows what the files say
        return None


def _checkpoint_version(run_dir: Path, run) -> str:
    if run is not None:
        return str(run.version)
    pointer = run_dir / "checkpoints" / "latest"
    if pointer.is_file():
        m = re.search(r"(\d+)", pointer.read_text())
        if m:
            return str(int(m.group(1)))
    return "unknown"


def _gates_layout(cfg, agent: int):
    """(length, n_actions, noise, shared gates, private gate) of a gates env, or None."""
    if cfg is None or getattr(cfg.env, "name", "") != "gates":
        return None
    try:
        from magicmask.actors.envs import make_env
        env = make_env(cfg, agent)
        return env.length, env.n_actions, env.noise, tuple(env.shared_gates), env.private_gate
    except Exception:   # noqa: BLE001
        return None


# ----------------------------------------------------------------------------------------------------
# sections
# ----------------------------------------------------------------------------------------------------
def _section(sid: str, title: str, what: str, body: str) -> str:
    return (f'<section id="{sid}"><h2>{_e(title)}</h2><p class="what">{_e(what)}</p>\n{body}\n</section>')


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


def _importance_section(traces: list[Trace] | None, fid: list[dict] | None, imgs: _Images, n_show: int,
                        missing: str) -> str:
    what = ("Importance of every step over time per agent and method (each method scaled to 0..1 within the "
            "episode), for the first episodes, with the smallest K's perturbed window shaded and the truly "
            "critical steps marked; below, the mean over all episodes.")
    if not traces:
        return _section("importance", "Importance over time", what, _note(missing))
    from matplotlib.ticker import MaxNLocator
    windows = _windows_by_episode(fid or [])
    methods = sorted({t.method for t in traces}, key=_method_key)
    agents = sorted({t.agent for t in traces}, key=_agent_key)
    by = {(t.method, t.agent, t.episode): t for t in traces}
    parts = []
    for agent in agents:
        episodes = sorted({t.episode for t in traces if t.agent == agent})
        shown = episodes[:n_show]
        # one axes per episode, one lane per method (cheaper to draw than an axes per method and episode);
        # a fixed layout in inches (tight_layout would draw the figure once more)
        W, H = 3.9 * len(shown) + 1.1, 0.55 * len(methods) + 1.1
        fig = _figure(W, H)
        axes = fig.subplots(1, len(shown), squeeze=False, sharey=True,
                            gridspec_kw=dict(left=1.0 / W, right=1 - 0.1 / W, top=1 - 0.65 / H, bottom=0.45 / H,
                                             wspace=0.06))[0]
        n_m = len(methods)
        for c, ep in enumerate(shown):
            ax = axes[c]
            crit_steps = None
            for r, method in enumerate(methods):
                base = n_m - 1 - r    # first method on top
                t = by.get((method, agent, ep))
                if t is None:
                    ax.text(0.5, base + 0.4, "no data", ha="center", va="center", fontsize=7,
                            transform=ax.get_yaxis_transform())
                    continue
                w = windows.get((method, agent, ep))
                if w is not None:
                    ax.fill_between([w[1] - 0.5, w[1] + w[2] - 0.5], base, base + 0.92, color="#ffcc80", lw=0)
                if t.true_critical is not None and t.true_critical.any():
                    crit_steps = t.steps[t.true_critical]
                short = len(t.steps) <= 60
                ax.plot(t.steps, base + 0.05 + 0.82 * _norm01(t.importance), color=_colour(method, methods),
                        lw=1.3, marker="o" if short else None, ms=2.2)
                ax.axhline(base, color="#dddddd", lw=0.6)
            if crit_steps is not None:
                ax.vlines(crit_steps, 0, n_m, color="black", lw=1.0, ls=":", alpha=0.8)
            t0 = next((by[(m, agent, ep)] for m in methods if (m, agent, ep) in by), None)
            seed = f" (seed {t0.seed})" if t0 is not None and t0.seed != "" else ""
            ax.set_title(f"episode {ep}{seed}", fontsize=9)
            ax.set_ylim(-0.05, n_m)
            if c == 0:   # shared y axis: the lanes' names once, on the left
                ax.set_yticks([n_m - 1 - r + 0.45 for r in range(n_m)], methods, fontsize=8)
            ax.tick_params(axis="y", length=0, labelleft=c == 0)
            ax.tick_params(axis="x", labelsize=7)
            ax.xaxis.set_major_locator(MaxNLocator(8, integer=True))
            ax.set_xlabel("step", fontsize=8)
        fig.suptitle(f"agent {agent}: importance per method (each scaled to its lane), shaded = perturbed window "
                     f"at the smallest K, dotted = truly critical", fontsize=9, y=1 - 0.12 / H)
        src = imgs.save(fig, f"importance-agent{agent}")
        # aggregate over every episode of this agent
        agg = _figure(10.0, 2.6)
        ax = agg.subplots()
        lens = {len(t.steps) for t in traces if t.agent == agent}
        fixed = len(lens) == 1
        n_bins = next(iter(lens)) if fixed else 20
        crit_sum, crit_n = np.zeros(n_bins), np.zeros(n_bins)
        for method in methods:
            acc, cnt = np.zeros(n_bins), np.zeros(n_bins)
            for ep in episodes:
                t = by.get((method, agent, ep))
                if t is None or len(t.steps) == 0:
                    continue
                pos = np.arange(len(t.steps)) if fixed else np.minimum(
                    (np.arange(len(t.steps)) * n_bins) // max(len(t.steps), 1), n_bins - 1)
                np.add.at(acc, pos, _norm01(t.importance))
                np.add.at(cnt, pos, 1)
                if t.true_critical is not None and method == methods[0]:
                    np.add.at(crit_sum, pos, t.true_critical.astype(float))
                    np.add.at(crit_n, pos, 1)
            ok = cnt > 0
            ax.plot(np.flatnonzero(ok), acc[ok] / cnt[ok], color=_colour(method, methods), lw=1.5, label=method,
                    marker="o" if n_bins <= 60 else None, ms=2.5)
        if crit_n.any():
            ok = crit_n > 0
            ax.bar(np.flatnonzero(ok), crit_sum[ok] / crit_n[ok], width=0.8, color="#dddddd", zorder=0,
                   label="share truly critical")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("step" if fixed else f"position in the episode ({n_bins} bins)", fontsize=8)
        ax.set_ylabel("mean scaled importance", fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.set_title(f"agent {agent}: mean over {len(episodes)} episodes", fontsize=9)
        agg.tight_layout()
        src2 = imgs.save(agg, f"importance-mean-agent{agent}")
        parts.append(f'<div class="agent"><h3>Agent {_e(agent)}</h3>{_img(src, f"importance agent {agent}")}'
                     f'{_img(src2, f"mean importance agent {agent}")}</div>')
    return _section("importance", "Importance over time", what, "\n".join(parts))


def _draw_gates_state(state: dict, layout, imgs: _Images) -> str | None:
    """A labelled drawing of one gates state from its observation: the episode's cells, the current step,
    the cue (the correct action) and the action the agent took."""
    obs = np.asarray(state.get("observation") or [], float)
    if layout is None or obs.ndim != 1:
        return None
    L, A, noise, shared, private = layout
    if len(obs) != L + A + noise:
        return None
    pos = int(np.argmax(obs[:L])) if obs[:L].max() > 0 else int(state.get("step", 0))
    cue = int(np.argmax(obs[L:L + A])) if obs[L:L + A].max() > 0 else None
    from matplotlib.patches import Rectangle
    fig = _figure(max(3.2, 0.24 * L + 0.4), 1.05)
    ax = fig.subplots()
    for s in range(L):
        colour = "#e6961e" if s in shared else "#3c78e6" if s == private else "#c8c8c8"
        ax.add_patch(Rectangle((s + 0.06, 0.06), 0.88, 0.88, color=colour, alpha=0.45 if s < pos else 1.0))
    ax.add_patch(Rectangle((pos + 0.02, 0.02), 0.96, 0.96, fill=False, ec="#d21e1e", lw=2.2))
    ax.plot([pos + 0.5], [-0.25], marker="^", color="#d21e1e", ms=7, clip_on=False)
    ax.set_xlim(0, L)
    ax.set_ylim(-0.45, 1.0)
    ax.set_xticks([s + 0.5 for s in range(L)], [str(s) for s in range(L)], fontsize=6)
    ax.set_yticks([])
    for sp in ax.spines.values():
        sp.set_visible(False)
    act = state.get("action")
    text = f"step {pos}: " + (f"gate, cue = action {cue}" if cue is not None else "no gate (no cue)")
    if act is not None:
        text += f"; took action {act}" + ("" if cue is None else (" ✓" if int(act) == cue else " ✗"))
    ax.set_title(text, fontsize=8)
    fig.subplots_adjust(left=0.02, right=0.98, top=0.8, bottom=0.2)
    return imgs.save(fig, f"gates-a{state.get('agent')}-e{state.get('episode')}-s{state.get('step')}")


def _displayable(obs: np.ndarray) -> np.ndarray:
    """An image observation as something imshow draws, scaled to 0..1: (C, H, W) or (H, W, C); 3 channels
    as RGB, otherwise (stacked grey frames) the last channel; more dimensions: the first 2-D slice."""
    x = np.asarray(obs, float)
    if x.ndim == 3:
        ch_last = x.shape[-1] <= 4 and x.shape[0] > 4
        x = x if ch_last else np.moveaxis(x, 0, -1)
        x = x if x.shape[-1] == 3 else x[..., -1]
    elif x.ndim > 3:
        x = x.reshape(x.shape[0], x.shape[1], -1)[..., 0]
    return _norm01(x)


def _draw_obs(state: dict, env_name: str, imgs: _Images) -> str | None:
    """A picture of an observation when the env gave no frame: a board (connect4), an image, or bars."""
    obs = np.asarray(state.get("observation") or [], float)
    if obs.size == 0:
        return None
    fig = _figure(3.0, 2.4)
    ax = fig.subplots()
    if env_name == "connect4" and obs.size == 84:
        planes = obs.reshape(6, 7, 2)
        board = np.full((6, 7, 3), [0.12, 0.3, 0.75])
        board[planes[..., 0] > 0] = [0.85, 0.15, 0.15]
        board[planes[..., 1] > 0] = [0.95, 0.85, 0.15]
        ax.imshow(board, interpolation="nearest")
        ax.set_title("red: the agent, yellow: opponent", fontsize=7)
        ax.set_xticks(range(7))
        ax.set_yticks([])
    elif obs.ndim >= 2:
        img = _displayable(obs)
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
        ax.axis("off")
    else:
        ax.bar(np.arange(obs.size), obs, color="#555")
        ax.set_xlabel("feature", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    return imgs.save(fig, f"obs-a{state.get('agent')}-e{state.get('episode')}-s{state.get('step')}")


def _critical_section(states: list[dict] | None, report_dir: Path, cfg, imgs: _Images, top: int,
                      missing: str) -> str:
    what = ("The steps each agent's mask rated most critical, as pictures (the env's rendered frame where it "
            "draws, and a labelled drawing of the observation for gates), with their importance and action.")
    if not states:
        return _section("critical-states", "Top critical states", what, _note(missing))
    env_name = getattr(getattr(cfg, "env", None), "name", "") if cfg is not None else ""
    by_agent = defaultdict(list)
    for s in states:
        by_agent[str(s.get("agent", ""))].append(s)
    parts = []
    if env_name == "gates":
        parts.append('<p class="legend"><span class="sw" style="background:#e6961e"></span>shared gate '
                     '<span class="sw" style="background:#3c78e6"></span>this agent\'s private gate '
                     '<span class="sw" style="background:#c8c8c8"></span>plain step; red: the current step '
                     '(in the frame: red bar underneath, white dot = the cue\'s action slot).</p>')
    for agent in sorted(by_agent, key=_agent_key):
        layout = _gates_layout(cfg, int(agent)) if env_name == "gates" and agent.lstrip("-").isdigit() else None
        items = sorted(by_agent[agent], key=lambda s: -_float(s.get("importance"), -np.inf))[:top]
        cards = []
        for s in items:
            pics = []
            if env_name == "gates":
                src = _draw_gates_state(s, layout, imgs)
                if src:
                    pics.append(_img(src, "gates state", "state"))
            frame = s.get("frame")
            if frame:
                rel = frame if str(frame).startswith("frames/") else f"frames/{frame}"
                if is_png(report_dir / rel):
                    pics.append(_img(rel, "rendered frame", "frame"))
            if not pics:
                src = _draw_obs(s, env_name, imgs)
                if src:
                    pics.append(_img(src, "observation", "state"))
            if not pics:
                pics.append(_note("no picture (no frame and no observation)"))
            cap = (f"episode {_e(s.get('episode', '?'))} (seed {_e(s.get('seed', '?'))}), step {_e(s.get('step', '?'))}"
                   f"<br>importance <b>{_e(_fmt(_float(s.get('importance'))))}</b>, action {_e(s.get('action', '?'))}")
            if s.get("true_critical") is not None:
                cap += "; truly critical" if s["true_critical"] else "; <i>not</i> truly critical"
            cards.append(f'<figure class="card">{"".join(pics)}<figcaption>{cap}</figcaption></figure>')
        parts.append(f'<div class="agent"><h3>Agent {_e(agent)}</h3><div class="cards">{"".join(cards)}</div></div>')
    return _section("critical-states", "Top critical states", what, "\n".join(parts))


def _mean_sd(x: list[float]) -> tuple[float, float, int]:
    a = np.array([v for v in x if math.isfinite(v)], float)
    if len(a) == 0:
        return float("nan"), float("nan"), 0
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0, len(a)


def _pm(v: tuple[float, float, int], digits: int) -> str:
    return "–" if v[2] == 0 else f"{v[0]:.{digits}f} ± {v[1]:.{digits}f}"


def _fidelity_section(fid: list[dict] | None, imgs: _Images, missing: str) -> str:
    what = ("Fidelity score log(p_d) - log(p_l) (higher is better) and reward drop in percent after perturbing the "
            "top-K window, against K, for every method; dashed: a random window of the same length (control).")
    if not fid:
        return _section("fidelity", "Fidelity against K", what, _note(missing))
    methods = sorted({r.get("method", "") for r in fid}, key=_method_key)
    groups = [("individual agents", [r for r in fid if _agent_key(r["agent"])[0] == 0]),
              ("team (joint window)", [r for r in fid if _agent_key(r["agent"])[0] == 1])]
    parts, rows = [], []
    ks = sorted({r["k"] for r in fid if math.isfinite(r["k"])})
    for label, sub in groups:
        if not sub:
            continue
        fig = _figure(10.5, 3.3)
        ax1, ax2 = fig.subplots(1, 2)
        for method in methods:
            col = _colour(method, methods)
            fs, dr, cd = [], [], []
            for k in ks:
                sel = [r for r in sub if r.get("method") == method and r["k"] == k]
                f_ = _mean_sd([r.get("fidelity_score", float("nan")) for r in sel])
                d_ = _mean_sd([r.get("reward_drop_pct", float("nan")) for r in sel])
                c_ = _mean_sd([r.get("control_reward_drop_pct", float("nan")) for r in sel])
                fs.append(f_)
                dr.append(d_)
                cd.append(c_)
            if any(r.get("method") == method for r in sub):
                n = sum(r.get("method") == method for r in sub)
                rows.append([label, method, n] + [_Raw(
                    f"{_pm(f_, 2)}<br><span class='sub'>{_pm(d_, 1)} % / {_pm(c_, 1)} %</span>")
                    for f_, d_, c_ in zip(fs, dr, cd)])
            xs = np.array(ks, float)

            def line(ax, vals, **kw):
                m = np.array([v[0] for v in vals])
                ok = np.isfinite(m)
                if ok.any():
                    se = np.array([v[1] / math.sqrt(max(v[2], 1)) for v in vals])
                    ax.errorbar(xs[ok], m[ok], yerr=np.nan_to_num(se[ok]), color=col, capsize=2, ms=4, **kw)
            line(ax1, fs, marker="o", lw=1.5, label=method)
            line(ax2, dr, marker="o", lw=1.5, label=method)
            line(ax2, cd, marker="x", lw=1.0, ls="--", alpha=0.7)
        ax1.set_title("fidelity score (higher is better)", fontsize=9)
        ax2.set_title("reward drop % (solid: top-K window, dashed: random window)", fontsize=9)
        for ax in (ax1, ax2):
            ax.set_xlabel("K (% of the episode)", fontsize=8)
            ax.set_xticks(ks)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        ax1.legend(fontsize=7)
        fig.suptitle(f"{label}: mean ± s.e. over episodes", fontsize=9)
        fig.tight_layout()
        parts.append(f"<h3>{_e(label.capitalize())}</h3>" + _img(imgs.save(fig, f"fidelity-{label.split()[0]}"),
                                                                   f"fidelity {label}"))
    parts.append("<details open><summary>Numbers: per K, the fidelity score, and below it the reward drop of the "
                 "top-K window / of the random window (mean ± s.d. over episodes; non-finite scores left out)"
                 "</summary>" + _table(["group", "method", "rows"] + [f"K = {_fmt(k, 0)} %" for k in ks], rows,
                                       "fidelity") + "</details>")
    return _section("fidelity", "Fidelity against K", what, "\n".join(parts))


def _comparison_section(metrics: dict | None, compare_md: str | None, compare_csv: list[list[str]] | None,
                        missing: str, errors: dict | None = None) -> str:
    what = ("Every method's metrics side by side (metrics.json), with its wall-clock cost to fit and to score, "
            "and the cross-run comparison table when `magicmask compare` wrote one.")
    parts = []
    if metrics:
        methods = sorted(metrics, key=_method_key)
        names: list[str] = []
        for m in methods:
            for k in (metrics[m] or {}):
                if k not in names and k not in ("fit_seconds", "score_seconds"):
                    names.append(k)
        rows = [[n] + [metrics[m].get(n) if isinstance(metrics[m], dict) else None for m in methods] for n in names]
        for n, label in (("fit_seconds", "fit wall-clock (s)"), ("score_seconds", "score wall-clock (s)")):
            rows.append([_Raw(f"<i>{_e(label)}</i>")] + [metrics[m].get(n) if isinstance(metrics[m], dict) else None
                                                         for m in methods])
        rows.append([_Raw("<i>total wall-clock (s)</i>")] + [
            sum(_float(metrics[m].get(k), 0.0) for k in ("fit_seconds", "score_seconds"))
            if isinstance(metrics[m], dict) else None for m in methods])
        parts.append(_table(["metric"] + methods, rows, "metrics"))
    if errors:
        parts.append(_note("explainers that failed: " + "; ".join(f"{k}: {v}" for k, v in errors.items())))
    if compare_md:
        parts.append('<h3>compare.md</h3><div class="md">' + _markdown_to_html(compare_md) + "</div>")
    elif compare_csv:
        parts.append("<h3>compare.csv</h3>" + _table(compare_csv[0], compare_csv[1:], "compare"))
    if not parts:
        parts.append(_note(missing))
    return _section("comparison", "Comparison of methods", what, "\n".join(parts))


def _precision_section(traces: list[Trace] | None, imgs: _Images) -> str:
    what = ("Precision at k of each method's ranking against the environment's true critical steps, k = the number of "
            "truly critical steps in the episode (mean over episodes).")
    known = [t for t in (traces or []) if t.true_critical is not None]
    if not known:
        return _section("precision", "Precision at k", what,
                        _note("no ground truth: this environment does not report true critical steps "
                              "(true_critical is empty in importance.csv)."))
    methods = sorted({t.method for t in known}, key=_method_key)
    agents = sorted({t.agent for t in known}, key=_agent_key)
    vals: dict[tuple, list[float]] = defaultdict(list)
    for t in known:
        p = precision_at_k(t.importance, t.true_critical)
        if p is not None:
            vals[(t.method, t.agent)].append(p)
            vals[(t.method, "all")].append(p)
    rows = []
    for m in methods:
        rows.append([m] + [_fmt(float(np.mean(vals[(m, a)]))) if vals[(m, a)] else "–" for a in agents] +
                    [_Raw(f"<b>{_e(_fmt(float(np.mean(vals[(m, 'all')]))))}</b>") if vals[(m, "all")] else "–",
                     len(vals[(m, "all")])])
    fig = _figure(max(4.5, 0.8 * len(methods) * max(len(agents), 1) ** 0.5 + 2), 2.8)
    ax = fig.subplots()
    width = 0.8 / max(len(agents), 1)
    for j, a in enumerate(agents):
        ys = [float(np.mean(vals[(m, a)])) if vals[(m, a)] else 0.0 for m in methods]
        ax.bar(np.arange(len(methods)) + (j - (len(agents) - 1) / 2) * width, ys, width * 0.95,
               color=[_colour(m, methods) for m in methods], alpha=0.45 + 0.55 * (j + 1) / len(agents),
               edgecolor="black", lw=0.3)
    means = [float(np.mean(vals[(m, "all")])) if vals[(m, "all")] else 0.0 for m in methods]
    ax.scatter(np.arange(len(methods)), means, color="black", marker="_", s=400, zorder=3, label="mean over agents")
    ax.set_xticks(np.arange(len(methods)), methods, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("precision at k", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title("bars: one per agent (left to right: agents " + ", ".join(agents) + ")", fontsize=8)
    fig.tight_layout()
    body = _img(imgs.save(fig, "precision"), "precision at k") + _table(
        ["method"] + [f"agent {a}" for a in agents] + ["mean", "episodes"], rows, "metrics")
    return _section("precision", "Precision at k", what, body)


def _feature_labels(cfg, agent: int, n: int) -> list[str]:
    lay = _gates_layout(cfg, agent)
    if lay is not None:
        L, A, noise = lay[:3]
        if L + A + noise == n:
            return ([f"step {i}" for i in range(L)] + [f"cue {i}" for i in range(A)]
                    + [f"noise {i}" for i in range(noise)])
    return [str(i) for i in range(n)]


def saliency(run, agent: int, episodes: int = 4, first_seed: int = 0, max_steps: int = 2000, chunk: int = 256):
    """Mean |dm/dobs| over the steps of a few unmasked episodes of one agent: (all steps, the truly critical
    steps or None, observations [N, *obs_shape], m [N]). m is the mask's keep-probability. At most
    `max_steps` steps (evenly spaced) enter, in chunks, so long image episodes stay cheap."""
    import torch

    from magicmask.explain.episodes import record_episodes
    eps = record_episodes(run, agent, episodes, first_seed=first_seed, masked=False)
    obs = np.concatenate([e.obs for e in eps]).astype(np.float32)
    crit = None
    if all(e.true_critical is not None for e in eps):
        crit = np.concatenate([e.true_critical for e in eps])
    if len(obs) > max_steps:
        idx = np.linspace(0, len(obs) - 1, max_steps).astype(np.int64)
        obs, crit = obs[idx], (crit[idx] if crit is not None else None)
    nets = run.policies[agent].nets
    grads, ms = [], []
    for i in range(0, len(obs), chunk):
        x = torch.as_tensor(obs[i:i + chunk]).requires_grad_(True)
        with torch.enable_grad():
            _, _, ml, _ = nets(x[None])
            m = torch.sigmoid(ml[0])
            (g,) = torch.autograd.grad(m.sum(), x)   # rows are independent: d m_j / d obs_j per step
        grads.append(g.abs().numpy())
        ms.append(m.detach().numpy())
    ga, m = np.concatenate(grads), np.concatenate(ms)
    return ga.mean(0), (ga[crit].mean(0) if crit is not None and crit.any() else None), obs, m


def _saliency_section(run_dir: Path, run, cfg, imgs: _Images, episodes: int) -> str:
    what = ("Which parts of the observation move the mask: the mean absolute gradient of the keep-probability m "
            "with respect to each observation feature (a heatmap on the frame for image observations), over "
            f"{episodes} unmasked episodes per agent (1 for image observations) played from the checkpoint.")
    if run is None:
        try:
            from magicmask.explain.episodes import load_run
            run = load_run(run_dir)
        except Exception as e:   # noqa: BLE001 - any reason the checkpoint cannot be used goes on the page
            return _section("saliency", "Observation saliency", what,
                            _note(f"saliency not available: the run's checkpoint could not be loaded "
                                  f"({type(e).__name__}: {e})."))
    cfg = run.cfg
    env_name = cfg.env.name
    first_seed = int(getattr(getattr(cfg, "explain", None), "first_seed", 0) or 0)   # explain's own episodes
    parts = []
    try:
        image = bool(getattr(run.policies[0].nets, "image_shape", None))
        for agent in range(len(run.policies)):
            # image observations: one episode (long, and a CNN per step), else `episodes`
            g_all, g_crit, obs, m = saliency(run, agent, 1 if image else episodes, first_seed)
            shape = obs.shape[1:]
            if len(shape) >= 2 or (env_name == "connect4" and g_all.size == 84):
                parts.append(_saliency_image(agent, g_all, obs, m, env_name, imgs))
                continue
            n = g_all.size
            labels = _feature_labels(cfg, agent, n)
            fig = _figure(min(max(5.0, 0.28 * n + 1.5), 16.0), 2.7)
            ax = fig.subplots()
            xs = np.arange(n)
            w = 0.42 if g_crit is not None else 0.8
            ax.bar(xs - (w / 2 if g_crit is not None else 0), g_all, w, color="#4c72b0", label="all steps")
            if g_crit is not None:
                ax.bar(xs + w / 2, g_crit, w, color="#dd8452", label="truly critical steps")
            if n <= 60:
                ax.set_xticks(xs, labels, rotation=90, fontsize=6)
            ax.set_ylabel("mean |dm/dobs|", fontsize=8)
            ax.tick_params(axis="y", labelsize=7)
            ax.legend(fontsize=7)
            ax.set_title(f"agent {agent}: observation saliency of the mask", fontsize=9)
            fig.tight_layout()
            src = imgs.save(fig, f"saliency-agent{agent}")
            parts.append(f'<div class="agent"><h3>Agent {agent}</h3>{_img(src, "saliency")}</div>')
    except Exception as e:   # noqa: BLE001
        parts.append(_note(f"saliency failed: {type(e).__name__}: {e}"))
    return _section("saliency", "Observation saliency", what, '<div class="agents">' + "\n".join(parts) + "</div>")


def _saliency_image(agent: int, g: np.ndarray, obs: np.ndarray, m: np.ndarray, env_name: str, imgs: _Images) -> str:
    """A heatmap of mean |dm/dobs| laid over the observation of the agent's most critical step."""
    top = int(np.argmax(m))
    pieces = None
    if env_name == "connect4" and g.size == 84:   # (6, 7, 2) planes: the mover's discs, the other's
        heat = g.reshape(6, 7, 2).sum(-1)
        planes = obs[top].reshape(6, 7, 2)
        base = np.full((6, 7, 3), [0.12, 0.3, 0.75])
        base[planes[..., 0] > 0] = [0.85, 0.15, 0.15]
        base[planes[..., 1] > 0] = [0.95, 0.85, 0.15]
        pieces = planes
    else:
        heat = g
        if heat.ndim == 3:   # channels first (C, H, W) unless the last axis is the small one (H, W, C)
            heat = heat.sum(-1) if heat.shape[-1] <= 4 and heat.shape[0] > 4 else heat.sum(0)
        elif heat.ndim > 3:
            heat = heat.reshape(heat.shape[0], heat.shape[1], -1).sum(-1)
        base = _displayable(obs[top])
    fig = _figure(7.0, 3.0)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.imshow(base, cmap="gray" if base.ndim == 2 else None, interpolation="nearest")
    ax1.set_title(f"observation at the highest-m step (m={m[top]:.2f})", fontsize=8)
    if pieces is None:
        ax2.imshow(base, cmap="gray" if base.ndim == 2 else None, interpolation="nearest")
        im = ax2.imshow(heat, cmap="inferno", alpha=0.6, interpolation="nearest")
    else:   # a board: the heatmap alone, the discs of the highest-m state as rings
        im = ax2.imshow(heat, cmap="inferno", interpolation="nearest")
        for plane, colour in ((0, "#e03030"), (1, "#f2d21a")):
            rr, cc = np.nonzero(pieces[..., plane] > 0)
            ax2.scatter(cc, rr, s=110, facecolors="none", edgecolors=colour, linewidths=1.8)
        ax1.set_title(f"highest-m state (m={m[top]:.2f}); red: the mover", fontsize=8)
    fig.colorbar(im, ax=ax2, fraction=0.046).ax.tick_params(labelsize=6)
    ax2.set_title("mean |dm/dobs| over the frame", fontsize=8)
    for ax in (ax1, ax2):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"agent {agent}", fontsize=9)
    fig.tight_layout()
    src = imgs.save(fig, f"saliency-agent{agent}")
    return f'<div class="agent"><h3>Agent {agent}</h3>{_img(src, "saliency heatmap")}</div>'


# ----------------------------------------------------------------------------------------------------
# the page
# ----------------------------------------------------------------------------------------------------
CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;color:#222}
header{background:#1f2a3a;color:#fff;padding:18px 32px}
header h1{margin:0 0 6px;font-size:22px}
header dl{display:flex;flex-wrap:wrap;gap:4px 22px;margin:0;font-size:13px}
header dt{opacity:.7}header dd{margin:0 0 0 4px;font-weight:600}
header dl div{display:flex}
nav{background:#fff;border-bottom:1px solid #ddd;padding:8px 32px;position:sticky;top:0;z-index:2;font-size:13px}
nav a{margin-right:16px;color:#1f4e9a;text-decoration:none}
main{padding:8px 32px 40px;max-width:1500px}
section{background:#fff;border:1px solid #e1e4e8;border-radius:6px;margin:18px 0;padding:6px 20px 16px}
h2{font-size:18px;margin:12px 0 4px}h3{font-size:14px;margin:14px 0 6px;color:#333}
p.what{color:#555;font-size:13px;margin:0 0 10px}
p.note{background:#fff8e1;border-left:3px solid #f0b400;padding:6px 10px;font-size:13px}
p.legend{font-size:12px;color:#444}
.sw{display:inline-block;width:12px;height:12px;border-radius:2px;margin:0 4px 0 10px;vertical-align:middle}
img.plot{max-width:100%;display:block;margin:6px 0}
div.agents{display:flex;flex-wrap:wrap;gap:0 28px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
figure.card{margin:0;border:1px solid #e1e4e8;border-radius:4px;padding:6px;background:#fafbfc;max-width:360px}
figure.card img{display:block;max-width:340px;margin:0 auto 4px}
figure.card img.frame{image-rendering:pixelated;min-width:200px;border:1px solid #ccc}
figcaption{font-size:12px;color:#333}
table{border-collapse:collapse;font-size:12px;margin:8px 0}
th,td{border:1px solid #dde;padding:3px 8px;text-align:right}
th{background:#eef1f5}td:first-child,th:first-child{text-align:left}
details summary{cursor:pointer;font-size:13px;color:#1f4e9a}
span.sub{color:#777;font-size:11px}
footer{font-size:11px;color:#888;padding:0 32px 20px}
"""

# Counts images that failed to load, for headless checks: body[data-broken-images] / [data-images].
BROKEN_IMAGES_SCRIPT = """<script>
(function(){function mark(){var im=document.images,n=0;for(var i=0;i<im.length;i++){
if(!im[i].complete||im[i].naturalWidth===0){n++;im[i].setAttribute('data-broken','1');}}
document.body.setAttribute('data-broken-images',String(n));document.body.setAttribute('data-images',String(im.length));}
if(document.readyState==='complete'){mark();}else{window.addEventListener('load',mark);}})();
</script>"""


def write_report(run_dir: str | Path, run=None, *, episodes_shown: int = 3, saliency_episodes: int = 4,
                 top_states: int | None = None) -> Path:
    """Write RUN_DIR/report/index.html (and its pictures under report/img/) from the files in RUN_DIR/report/.
    `run`: an already loaded TrainedRun (explain.episodes.load_run) for the saliency section; loaded from the
    run's checkpoint when None. `episodes_shown`: episodes per agent plotted step by step; `saliency_episodes`:
    unmasked episodes per agent played for the saliency; `top_states`: critical states per agent shown
    (default: the config's explain.top_states, else 10). Returns the page's path."""
    run_dir = Path(run_dir)
    report_dir = run_dir / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    imgs = _Images(report_dir)
    cfg = _load_cfg(run_dir, run)

    def maybe(name, reader):
        p = report_dir / name
        if not p.is_file():
            return None, f"{name} not found in {report_dir} (run `magicmask explain {run_dir}` first)."
        try:
            return reader(p), f"{name} is empty."
        except Exception as e:   # noqa: BLE001
            return None, f"{name} could not be read: {type(e).__name__}: {e}"

    traces, miss_imp = maybe("importance.csv", read_importance)
    fid, miss_fid = maybe("fidelity.csv", read_fidelity)
    states, miss_cs = maybe("critical_states.jsonl", read_critical_states)
    metrics, miss_met = maybe("metrics.json", lambda p: json.loads(p.read_text()))
    compare_md, _ = maybe("compare.md", lambda p: p.read_text())
    compare_csv, _ = maybe("compare.csv", lambda p: list(csv.reader(p.open(newline=""))))
    summary, _ = maybe("summary.json", lambda p: json.loads(p.read_text()))
    summary = summary if isinstance(summary, dict) else {}
    if top_states is None:
        top_states = int(getattr(getattr(cfg, "explain", None), "top_states", 10) or 10)
    if metrics is not None and not isinstance(metrics, dict):
        metrics, miss_met = None, "metrics.json is not a mapping of method to metrics."

    sections = [
        _importance_section(traces, fid, imgs, episodes_shown, miss_imp),
        _critical_section(states, report_dir, cfg, imgs, top_states, miss_cs),
        _fidelity_section(fid, imgs, miss_fid),
        _comparison_section(metrics, compare_md, compare_csv, miss_met, summary.get("errors") or {}),
        _precision_section(traces, imgs),
        _saliency_section(run_dir, run, cfg, imgs, saliency_episodes),
    ]

    name = (cfg.run.name if cfg is not None and cfg.run.name else run_dir.name)
    env = cfg.env.name if cfg is not None else "unknown"
    agents = str(cfg.run.agents) if cfg is not None else (
        str(len({t.agent for t in traces})) if traces else "unknown")
    methods = sorted({t.method for t in traces}, key=_method_key) if traces else []
    n_eps = len({(t.agent, t.episode) for t in traces}) if traces else 0
    version = str(summary.get("checkpoint_version", _checkpoint_version(run_dir, run)))
    info = [("run", name), ("env", env), ("agents", agents), ("checkpoint version", version),
            ("methods", ", ".join(methods) or "none"), ("episodes (agent x episode)", str(n_eps)),
            ("date", _dt.datetime.now().strftime("%Y-%m-%d %H:%M"))]
    head = "".join(f"<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>" for k, v in info)
    nav = "".join(f'<a href="#{sid}">{_e(t)}</a>' for sid, t in zip(
        SECTION_IDS, ("Importance", "Critical states", "Fidelity", "Comparison", "Precision at k", "Saliency")))
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>MAGIC-MASK report: {_e(name)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>\n'
            f'<body><header><h1>MAGIC-MASK report: {_e(name)}</h1><dl>{head}</dl></header>\n<nav>{nav}</nav>\n'
            f'<main>\n' + "\n".join(sections) + '\n</main>\n'
            '<footer>Written by explain/report.py; the pictures are in img/ and frames/ beside this page.</footer>\n'
            f'{BROKEN_IMAGES_SCRIPT}\n</body></html>\n')
    out = report_dir / "index.html"
    tmp = report_dir / ".index.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m magicmask.report", description="Write RUN_DIR/report/index.html.")
    ap.add_argument("run_dir")
    args = ap.parse_args(argv)
    print(write_report(Path(args.run_dir)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
