"""The report's plots of numbers (importance over time, fidelity against K, precision at k, saliency bars) and the
canvas and PNG files they are drawn on. matplotlib's object API on an Agg canvas: no pyplot state and no global
backend switch, so drawing is safe in any process and thread."""
from __future__ import annotations

import io
import math
import re
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

METHOD_COLOURS = {"magicmask": "#d62728", "statemask": "#1f77b4", "edge": "#2ca02c", "lazymdp": "#9467bd",
                  "valuemax": "#8c564b", "random": "#7f7f7f"}
_EXTRA_COLOURS = ("#e377c2", "#17becf", "#bcbd22", "#ff7f0e")


def new_figure(w: float, h: float) -> Figure:
    """A w x h inch figure on its own Agg canvas."""
    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: Path | None = None) -> bytes:
    """The figure as PNG bytes (100 dpi, white background), also written to `path` when given. Callers lay out
    (tight_layout) first."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, facecolor="white")
    data = buf.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data


class ImageDir:
    """The page's pictures: PNG files under report/img/, numbered in drawing order, linked relatively."""

    def __init__(self, report_dir: Path):
        self.dir = report_dir / "img"
        self.dir.mkdir(parents=True, exist_ok=True)
        for old in self.dir.glob("*.png"):   # pictures of an earlier report of this run
            old.unlink(missing_ok=True)
        self.n = 0

    def save(self, fig: Figure, stem: str) -> str:
        """Write the figure and return its path relative to the page."""
        self.n += 1
        name = f"{self.n:03d}-{re.sub(r'[^A-Za-z0-9_-]+', '_', stem)}.png"
        save_figure(fig, self.dir / name)
        return f"img/{name}"


def colour(method: str, methods: list[str]) -> str:
    """A method's fixed colour; methods without one share a small extra palette."""
    if method in METHOD_COLOURS:
        return METHOD_COLOURS[method]
    extra = [m for m in methods if m not in METHOD_COLOURS]
    return _EXTRA_COLOURS[extra.index(method) % len(_EXTRA_COLOURS)] if method in extra else "#333333"


def norm01(x: np.ndarray) -> np.ndarray:
    """x scaled to 0..1 (all zeros when constant)."""
    lo, hi = float(np.min(x)), float(np.max(x))
    return np.zeros_like(x, float) if hi - lo < 1e-12 else (x - lo) / (hi - lo)


def importance_lanes(agent: str, episodes: list[int], methods: list[str], by: dict, windows: dict) -> Figure:
    """One axes per episode, one lane per method (cheaper to draw than an axes per method and episode), with the
    perturbed window shaded and the truly critical steps dotted. `by`: (method, agent, episode) -> Trace;
    `windows`: the same key -> (k, start, length)."""
    # a fixed layout in inches (tight_layout would draw the figure once more)
    W, H = 3.9 * len(episodes) + 1.1, 0.55 * len(methods) + 1.1
    fig = new_figure(W, H)
    axes = fig.subplots(1, len(episodes), squeeze=False, sharey=True,
                        gridspec_kw=dict(left=1.0 / W, right=1 - 0.1 / W, top=1 - 0.65 / H, bottom=0.45 / H,
                                         wspace=0.06))[0]
    n_m = len(methods)
    for c, ep in enumerate(episodes):
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
            ax.plot(t.steps, base + 0.05 + 0.82 * norm01(t.importance), color=colour(method, methods),
                    lw=1.3, marker="o" if len(t.steps) <= 60 else None, ms=2.2)
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
    return fig


def importance_mean(agent: str, episodes: list[int], methods: list[str], by: dict) -> Figure:
    """Mean scaled importance by step over every episode of one agent (by position bins when lengths differ),
    over the share of episodes in which each step is truly critical."""
    fig = new_figure(10.0, 2.6)
    ax = fig.subplots()
    traces = [t for t in by.values() if t.agent == agent]
    lens = {len(t.steps) for t in traces}
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
            np.add.at(acc, pos, norm01(t.importance))
            np.add.at(cnt, pos, 1)
            if t.true_critical is not None and method == methods[0]:
                np.add.at(crit_sum, pos, t.true_critical.astype(float))
                np.add.at(crit_n, pos, 1)
        ok = cnt > 0
        ax.plot(np.flatnonzero(ok), acc[ok] / cnt[ok], color=colour(method, methods), lw=1.5, label=method,
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
    fig.tight_layout()
    return fig


def fidelity(label: str, ks: list[float], stats: dict[str, tuple[list, list, list]], methods: list[str]) -> Figure:
    """Fidelity score and reward drop against K, mean ± s.e. `stats`: method -> per-K (mean, sd, n) of the
    fidelity score, the top-K window's reward drop and the random window's (the control)."""
    fig = new_figure(10.5, 3.3)
    ax1, ax2 = fig.subplots(1, 2)
    xs = np.array(ks, float)
    for method, (fs, dr, cd) in stats.items():
        col = colour(method, methods)

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
    if ax1.get_legend_handles_labels()[0]:
        ax1.legend(fontsize=7)
    fig.suptitle(f"{label}: mean ± s.e. over episodes", fontsize=9)
    fig.tight_layout()
    return fig


def precision(methods: list[str], agents: list[str], per_agent: dict[tuple, float], means: list[float]) -> Figure:
    """Precision at k per method: a bar per agent (`per_agent`: (method, agent) -> mean), a tick for the mean."""
    fig = new_figure(max(4.5, 0.8 * len(methods) * max(len(agents), 1) ** 0.5 + 2), 2.8)
    ax = fig.subplots()
    width = 0.8 / max(len(agents), 1)
    for j, a in enumerate(agents):
        ys = [per_agent.get((m, a), 0.0) for m in methods]
        ax.bar(np.arange(len(methods)) + (j - (len(agents) - 1) / 2) * width, ys, width * 0.95,
               color=[colour(m, methods) for m in methods], alpha=0.45 + 0.55 * (j + 1) / len(agents),
               edgecolor="black", lw=0.3)
    ax.scatter(np.arange(len(methods)), means, color="black", marker="_", s=400, zorder=3, label="mean over agents")
    ax.set_xticks(np.arange(len(methods)), methods, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("precision at k", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title("bars: one per agent (left to right: agents " + ", ".join(agents) + ")", fontsize=8)
    fig.tight_layout()
    return fig


def saliency_bars(agent: int, g_all: np.ndarray, g_crit: np.ndarray | None, labels: list[str]) -> Figure:
    """Mean |dm/dobs| per observation feature, over all steps and (beside) over the truly critical ones."""
    n = g_all.size
    fig = new_figure(min(max(5.0, 0.28 * n + 1.5), 16.0), 2.7)
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
    return fig
