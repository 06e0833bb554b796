"""The study's tables: the columns of commstudy.csv and commstudy_runs.csv, and the cell tables (mean ± sd
per quantity) that commstudy.md and index.html both show."""
from __future__ import annotations

from magicmask.commstudy.plan import Study
from magicmask.commstudy.runs import METRIC_NAMES, METRICS
from magicmask.explain.stats import fmt_mean_sd
from magicmask.explain.tables import cell as csv_cell

CELL_COLUMNS = ("cell", "axis", "value", "runs", "complete",
                *[c for m in METRIC_NAMES for c in (m, f"{m}_std", f"{m}_n")])
RUN_COLUMNS = ("cell", "seed", "run_dir", "error", *METRIC_NAMES)

# The two tables (and figures): what the runs learned and explained, and what the channel did.
LEARNING = ("steps_to_target", "steps_to_target_masked", "target_reached", "final_return", "fidelity_k10",
            "inter_agent_fidelity", "precision_at_k")
CHANNEL = ("delivered_share", "snapshots_dropped", "snapshots_undelivered", "age_at_use_s", "age_at_use_steps",
           "delay_s", "guided_share")

Table = tuple[list[str], list[list[str]]]   # header, body rows


def metric_table(rows: list[dict], metrics) -> Table:
    """Cells as rows, metrics as columns: mean ± std, with (n=...) where fewer runs than the complete ones have it."""
    body = []
    for r in rows:
        vals = []
        for m in metrics:
            n = r[f"{m}_n"]
            vals.append(fmt_mean_sd(r[m], r[f"{m}_std"], n) + (f" (n={n})" if 0 < n < r["complete"] else ""))
        body.append([r["cell"], f"{r['complete']}/{r['runs']}", *vals])
    return ["cell", "runs", *metrics], body


def cell_tables(study: Study, rows: list[dict]) -> list[tuple[str, Table]]:
    """The result tables and the cells' overrides, titled (shared by commstudy.md and index.html)."""
    cells = [[c.label, " ".join(c.overrides) or "(the config as given)"] for c in study.cells]
    return [("Learning and explanation", metric_table(rows, LEARNING)),
            ("The channel", metric_table(rows, CHANNEL)),
            ("Cells", (["cell", "overrides"], cells))]


def definitions() -> Table:
    return ["quantity", "definition"], [list(m) for m in METRICS]


def pipe_table(table: Table) -> list[str]:
    header, body = table
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(r) + " |" for r in body]]


def target_text(meta: dict) -> str:
    return csv_cell(meta["target"]) or "unavailable"


def summary_line(study: Study, meta: dict) -> str:
    """The study's seeds, size, wall time, machine, load and target, and how to read the tables."""
    return (f"Seeds {','.join(map(str, study.seeds))}; {len(study.cells)} cells; {meta['runs']} runs; wall time "
            f"{meta['wall_s'] / 60:.1f} min on {meta['machine']} (load average {meta['load_start']:.1f} at the "
            f"start, {meta['load_end']:.1f} at the end). Target return {target_text(meta)} "
            f"({meta['target_basis']}). Mean ± sample standard deviation over the seeds of each cell; (n=...): "
            "fewer runs than the complete ones have the quantity; – : no run of the cell has it. runs: "
            "complete (trained and explained) / planned.")


def markdown(study: Study, rows: list[dict], meta: dict) -> str:
    """commstudy.md: the command, the summary, the tables and the definitions."""
    lines = [f"# Communication study ({study.config})", "", f"Command: `{meta['command']}`", "",
             summary_line(study, meta), ""]
    for title, table in cell_tables(study, rows):
        lines += [f"## {title}", "", *pipe_table(table), ""]
    lines += ["## Definitions", "", *[f"- `{m}`: {d}" for m, d in METRICS], ""]
    return "\n".join(lines)
