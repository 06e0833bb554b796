"""The study's four figures as PNG bytes: the learning and explanation quantities per cell, the channel's, the
team's evaluation curves per axis, and the effects relative to the baseline against latency and loss.
Matplotlib's object API (no pyplot state), imported on first use."""
from __future__ import annotations

import io
import math

import numpy as np

from magicmask.commstudy.grid import AXES
from magicmask.commstudy.plan import Study
from magicmask.commstudy.runs import RunData, team_curve
from magicmask.commstudy.tables import CHANNEL, LEARNING

AXIS_COLOURS = {"baseline": "#333333", "nocomm": "#7f7f7f", "latency": "#1f77b4", "loss": "#d62728",
                "burst": "#ff7f0e", "bandwidth": "#2ca02c", "topology": "#9467bd"}
LINE_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#17becf", "#8c564b", "#e377c2", "#bcbd22")
LOG_SCALED = ("age_at_use_s", "age_at_use_steps", "delay_s")   # when their cells span more than 20x
EFFECT_METRICS = ("steps_to_target", "steps_to_target_masked", "train_return", "final_return", "fidelity_k10",
                  "inter_agent_fidelity")
# The effect figure's rows: (x axis, its label, the series: axis of the cells, legend label, marker and line).
EFFECT_ROWS = (("latency", "latency (ms, log scale)", (("latency", "latency", "o-"),)),
               ("loss", "loss probability (stationary rate)", (("loss", "iid loss", "o-"),
                                                               ("burst", "bursty loss", "s--"))))


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, facecolor="white")
    return buf.getvalue()


def _dots_panel(ax, m: str, rows: list[dict], per_run: list[tuple[RunData, dict]], y) -> None:
    """One metric: per cell the seeds as small dots, their mean as a diamond with the sample std as a bar."""
    for yi, r in zip(y, rows):
        if r[f"{m}_n"] == 0:
            ax.text(0.02, yi, "n/a", va="center", fontsize=7, color="#999999", transform=ax.get_yaxis_transform())
            continue
        colour = AXIS_COLOURS.get(r["axis"], "#333333")
        seeds = [v[m] for run, v in per_run if run.cell == r["cell"] and v[m] is not None]
        ax.scatter(seeds, [yi] * len(seeds), s=10, color=colour, alpha=0.5, zorder=2)
        ax.errorbar(r[m], yi, xerr=r[f"{m}_std"] if r[f"{m}_n"] > 1 else None, fmt="D", ms=5, color=colour,
                    capsize=2, lw=1.0, zorder=3)
    ref = {r["cell"]: r for r in rows}
    for name, style in (("baseline", "--"), ("nocomm", ":")):
        if name in ref and ref[name][f"{m}_n"]:
            ax.axvline(ref[name][m], color="black", ls=style, lw=0.8)
    if m in LOG_SCALED:
        vals = [r[m] for r in rows if r[f"{m}_n"] and r[m] > 0]
        if vals and max(vals) / min(vals) > 20:
            ax.set_xscale("log")


def dots(rows: list[dict], per_run: list[tuple[RunData, dict]], metrics, ncols: int = 4) -> bytes:
    """Per metric a panel, cells top to bottom; dashed line: the baseline's mean, dotted: NoComm's. A cell
    without the quantity says n/a."""
    fig = _figure(14, 1.2 + 0.32 * len(rows) * 2)
    nrows = math.ceil(len(metrics) / ncols)
    y = np.arange(len(rows))[::-1]
    for i, m in enumerate(metrics):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        _dots_panel(ax, m, rows, per_run, y)
        ax.set_yticks(y)
        ax.set_yticklabels([r["cell"] for r in rows] if i % ncols == 0 else [], fontsize=7)
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(m, fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def _curves_panel(ax, study: Study, runs: list[RunData], axis: str) -> None:
    """One axis's cells and the baseline and NoComm: mean over seeds of the team's masked evaluation return."""
    colours = iter(LINE_COLOURS)
    for c in study.cells:
        if c.axis not in ("baseline", "nocomm", axis):
            continue
        curves = [team_curve(r, masked=True) for r in runs if r.cell == c.label]
        steps = sorted(s for s in set().union(*curves) if all(s in cu for cu in curves)) if curves else []
        if not steps:
            continue
        mean = [np.mean([cu[s] for cu in curves]) for s in steps]
        style = (dict(color="black", lw=1.6) if c.axis == "baseline" else
                 dict(color="#7f7f7f", lw=1.6, ls=":") if c.axis == "nocomm" else dict(color=next(colours), lw=1.0))
        ax.plot(steps, mean, label=c.label, **style)


def curves(study: Study, runs: list[RunData], target: float | None) -> bytes:
    """Per axis a panel: the team's evaluation return (mask in explaining mode) against env steps per agent,
    one line per cell of the axis, with the baseline and NoComm for reference; grey dashed: the target."""
    axes = [a for a in AXES if any(c.axis == a for c in study.cells)] or ["baseline"]
    fig = _figure(max(6.0, 3.6 * len(axes)), 3.4)
    for i, name in enumerate(axes):
        ax = fig.add_subplot(1, len(axes), i + 1)
        _curves_panel(ax, study, runs, name)
        if target is not None:
            ax.axhline(target, color="#999999", lw=0.7, ls="--")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("env steps per agent", fontsize=8)
        if i == 0:
            ax.set_ylabel("team eval return, mask explaining", fontsize=8)
        ax.tick_params(labelsize=7)
        if ax.get_legend_handles_labels()[0]:  # a panel whose cells have no evaluations stays empty
            ax.legend(fontsize=6, loc="lower right")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def _effect_series(ax, effects: list[dict], axis: str, m: str, label: str, fmt: str) -> bool:
    """One axis's cells of one metric: the effect at each axis value, its 95% interval as the bar (none below 2
    pairs). False when no cell of the axis has the quantity."""
    pts = sorted(((float(e["value"]), e) for e in effects if e["axis"] == axis and e["metric"] == m and e["n"]),
                 key=lambda p: p[0])
    if not pts:
        return False
    x = [v for v, _ in pts]
    y = [e["diff"] for _, e in pts]
    err = np.nan_to_num([[e["diff"] - e["lo"] for _, e in pts], [e["hi"] - e["diff"] for _, e in pts]])
    ax.errorbar(x, y, yerr=err, fmt=fmt, ms=4, lw=1.0, capsize=3, color=AXIS_COLOURS[axis], label=label)
    return True


def _nocomm_band(ax, effects: list[dict], m: str) -> None:
    """NoComm's effect of the metric as a dotted line, its 95% interval as a grey band (the reference)."""
    e = next((e for e in effects if e["axis"] == "nocomm" and e["metric"] == m and e["n"]), None)
    if e is None:
        return
    ax.axhline(e["diff"], color="#7f7f7f", ls=":", lw=1.2, label="NoComm")
    if math.isfinite(e["lo"]) and math.isfinite(e["hi"]):
        ax.axhspan(e["lo"], e["hi"], color="#7f7f7f", alpha=0.15, lw=0)


def effects_figure(effects: list[dict]) -> bytes:
    """Rows: latency and loss (iid and bursty as two series); per metric a column: the effect cell - baseline
    (paired over the seeds both have) against the axis value, bar = 95% interval; dashed: no effect (the
    baseline), dotted line and grey band: NoComm's effect and interval. A panel without cells says so."""
    fig = _figure(3.0 * len(EFFECT_METRICS), 6.2)
    for i, (name, xlabel, series) in enumerate(EFFECT_ROWS):
        legend = False   # once per row, in its first panel with something drawn
        for j, m in enumerate(EFFECT_METRICS):
            ax = fig.add_subplot(len(EFFECT_ROWS), len(EFFECT_METRICS), i * len(EFFECT_METRICS) + j + 1)
            ax.axhline(0.0, color="black", ls="--", lw=0.8)
            _nocomm_band(ax, effects, m)
            drawn = [_effect_series(ax, effects, axis, m, *spec) for axis, *spec in series]
            if not any(drawn):
                ax.text(0.5, 0.5, f"no {name} cell has it", ha="center", va="center", fontsize=8, color="#999999",
                        transform=ax.transAxes)
            elif name == "latency":
                ax.set_xscale("log")
            if not legend and ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=6, loc="best")
                legend = True
            ax.set_title(m, fontsize=9)
            ax.set_xlabel(xlabel, fontsize=8)
            if j == 0:
                ax.set_ylabel("cell - baseline", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def draw(study: Study, rows: list[dict], per_run: list[tuple[RunData, dict]], effects: list[dict],
         target: float | None) -> dict[str, bytes]:
    """The four figures by file stem (img/<stem>.png)."""
    runs = [r for r, _ in per_run]
    return {"commstudy-learning": dots(rows, per_run, LEARNING), "commstudy-channel": dots(rows, per_run, CHANNEL),
            "commstudy-curves": curves(study, runs, target), "commstudy-effects": effects_figure(effects)}
