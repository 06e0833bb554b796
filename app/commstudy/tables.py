"""The study's tables: the columns of commstudy.csv, commstudy_runs.csv and commstudy_effects.csv, and the
tables (per cell the mean [95% interval] of each quantity; per cell the effect relative to the baseline) that
commstudy.md and index.html both show."""
from __future__ import annotations

from magicmask.commstudy.plan import COMM_SEEDS, Study
from magicmask.commstudy.runs import METRIC_NAMES, METRICS
from magicmask.explain.stats import fmt_interval
from magicmask.explain.tables import cell as csv_cell

CELL_COLUMNS = ("cell", "axis", "value", "runs", "complete",
                *[c for m in METRIC_NAMES for c in (m, f"{m}_std", f"{m}_n", f"{m}_ci_lo", f"{m}_ci_hi")])
RUN_COLUMNS = ("cell", "seed", "run_dir", "error", *METRIC_NAMES)
EFFECT_COLUMNS = ("cell", "axis", "value", "metric", "n", "diff", "lo", "hi", "significant")

# The two tables (and figures): what the runs learned and explained, and what the channel did.
LEARNING = ("steps_to_target", "steps_to_target_masked", "target_reached", "train_return", "final_return",
            "fidelity_k10", "inter_agent_fidelity", "precision_at_k")
CHANNEL = ("delivered_share", "snapshots_dropped", "snapshots_undelivered", "age_at_use_s", "age_at_use_steps",
           "delay_s", "guided_share")

# How to read the numbers in brackets (the definitions' first rows).
READING = (
    ("[lo, hi] of a cell", "the 95% Student-t interval of the cell's mean over its seeds (at least 2 runs with the "
                           "quantity): mean ± t(0.975, n-1) x sd / sqrt(n); commstudy.csv: <quantity>_ci_lo, "
                           "<quantity>_ci_hi"),
    ("effect", "cell - baseline, paired: the mean over the seeds both cells have of (the cell's run - the "
               "baseline's run of the same seed), [lo, hi] the 95% t interval of those differences; + / -: it lies "
               "above / below 0 (different from the baseline at the 5% level); whether higher is better depends "
               "on the quantity (steps: lower is better); commstudy_effects.csv"),
)

Table = tuple[list[str], list[list[str]]]   # header, body rows


def _n_note(n: int, of: int) -> str:
    """' (n=...)' where fewer runs (or pairs) than `of` have the quantity."""
    return f" (n={n})" if 0 < n < of else ""


def metric_table(rows: list[dict], metrics) -> Table:
    """Cells as rows, metrics as columns: mean [95% interval], with (n=...) where fewer runs than the complete
    ones have it."""
    body = []
    for r in rows:
        vals = [fmt_interval(r[m], (r[f"{m}_ci_lo"], r[f"{m}_ci_hi"]), r[f"{m}_n"])
                + _n_note(r[f"{m}_n"], r["complete"]) for m in metrics]
        body.append([r["cell"], f"{r['complete']}/{r['runs']}", *vals])
    return ["cell", "runs", *metrics], body


def effect_table(effects: list[dict], metrics, seeds: int) -> Table:
    """Cells as rows, metrics as columns: effect [95% interval] with + / - where the interval excludes 0, and
    (n=...) where fewer pairs than the study's seeds have the quantity."""
    idx = {(e["cell"], e["metric"]): e for e in effects}
    body = []
    for cell in dict.fromkeys(e["cell"] for e in effects):
        es = [idx[(cell, m)] for m in metrics]
        body.append([cell, *[" ".join(filter(None, (fmt_interval(e["diff"], (e["lo"], e["hi"]), e["n"]),
                                                      e["significant"]))) + _n_note(e["n"], seeds) for e in es]])
    return ["cell", *metrics], body


def cell_tables(study: Study, rows: list[dict], effects: list[dict]) -> list[tuple[str, Table]]:
    """The result tables, the effects and the cells' overrides, titled (shared by commstudy.md and index.html)."""
    cells = [[c.label, " ".join(c.overrides) or "(the config as given)"] for c in study.cells]
    return [("Learning and explanation", metric_table(rows, LEARNING)),
            ("The channel", metric_table(rows, CHANNEL)),
            ("Effects relative to the baseline", effect_table(effects, LEARNING, len(study.seeds))),
            ("Cells", (["cell", "overrides"], cells))]


def definitions() -> Table:
    return ["quantity", "definition"], [list(m) for m in (*READING, *METRICS)]


def pipe_table(table: Table) -> list[str]:
    header, body = table
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(r) + " |" for r in body]]


def target_text(meta: dict) -> str:
    return csv_cell(meta["target"]) or "unavailable"


def summary_line(study: Study, meta: dict) -> str:
    """The study's seeds, size, wall time, machine, load, target and comm.seed design, and how to read the tables."""
    return (f"Seeds {','.join(map(str, study.seeds))}; {len(study.cells)} cells; {meta['runs']} runs; wall time "
            f"{meta['wall_s'] / 60:.1f} min on {meta['machine']} (load average {meta['load_start']:.1f} at the "
            f"start, {meta['load_end']:.1f} at the end). Target return {target_text(meta)} "
            f"({meta['target_basis']}). comm.seed {study.comm_seed}: {COMM_SEEDS[study.comm_seed]}. "
            "Cells: mean [95% t interval of the mean] over the seeds of each cell (no interval below 2 runs; the "
            "sample standard deviation is in commstudy.csv and the figures). Effects: cell - baseline, the mean "
            "of the paired differences over the seeds both cells have [their 95% t interval]; + / -: the interval "
            "lies above / below 0. (n=...): fewer runs (pairs) than the complete ones (the seeds) have the "
            "quantity; – : no run of the cell has it. runs: complete (trained and explained) / planned.")


def markdown(study: Study, rows: list[dict], effects: list[dict], meta: dict) -> str:
    """commstudy.md: the command, the summary, the tables and the definitions."""
    lines = [f"# Communication study ({study.config})", "", f"Command: `{meta['command']}`", "",
             summary_line(study, meta), ""]
    for title, table in cell_tables(study, rows, effects):
        lines += [f"## {title}", "", *pipe_table(table), ""]
    lines += ["## Definitions", "", *[f"- `{m}`: {d}" for m, d in (*READING, *METRICS)], ""]
    return "\n".join(lines)
