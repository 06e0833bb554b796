"""Learning curves of a finished run from its `metrics.jsonl` (one line per learner update): per agent, the
mean training return of the episodes that ended in the batch and every evaluation the actor logged
(`eval.*`: greedy return plain and masked, win rates against each opponent), against the agent's env steps.
`magicmask curves RUN_DIR` draws them into one PNG and prints the first and last evaluation per agent, the
numbers docs/RESULTS.md quotes."""
from __future__ import annotations

from pathlib import Path

from magicmask.metrics_log import agent_records


def read_curves(run_dir: str | Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{agent: {series: [(env_steps, value), ...]}}; series are `mean_return` and every `eval.<key>` (the
    learner writes an evaluation once, in the first update after the actor sent it). Non-finite values (no
    episode ended in the batch) are left out."""
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for rec in agent_records(run_dir):
        series = out.setdefault(str(rec.agent), {})
        if rec.env_steps is None:
            continue
        values = {"mean_return": rec.mean_return, **{f"eval.{k}": v for k, v in rec.eval.items()}}
        for name, v in values.items():
            if v is not None:
                series.setdefault(name, []).append((rec.env_steps, v))
    return out


def summary(curves: dict) -> list[str]:
    """One line per agent and evaluation series: first and last value with their env steps."""
    lines = []
    for agent in sorted(curves, key=int):
        for name, pts in sorted(curves[agent].items()):
            if name.startswith("eval.") and pts:
                (s0, v0), (s1, v1) = pts[0], pts[-1]
                lines.append(f"agent {agent} {name}: {v0:.3g} at {s0} steps -> {v1:.3g} at {s1} steps")
    return lines


def plot_curves(curves: dict, out: str | Path, title: str = "") -> Path:
    """Two panels: mean training return; the evaluations' greedy return (plain and masked) or win rates."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
    for agent in sorted(curves, key=int):
        pts = curves[agent].get("mean_return", [])
        if pts:
            ax1.plot(*zip(*pts), lw=1, color=f"C{int(agent) % 10}", label=f"agent {agent}")
        for name, style in (("eval.return_plain", "-"), ("eval.return_masked", ":")):
            pts = curves[agent].get(name, [])
            if pts:
                ax2.plot(*zip(*pts), style, marker=".", lw=1, color=f"C{int(agent) % 10}",
                         label=f"agent {agent} {name.split('_')[-1]}")
    ax1.set(xlabel="env steps of the agent", ylabel="mean training return", title="training episodes")
    ax2.set(xlabel="env steps of the agent", ylabel="greedy return", title="evaluation (plain; dotted: masked)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
