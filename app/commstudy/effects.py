"""Each cell's effect relative to the baseline: per quantity the mean of the paired differences cell - baseline
over the seeds both cells have (a seed is one training draw, run in every cell: pairing removes the seeds' own
spread from the comparison), with the 95% Student-t interval of those differences and whether it excludes 0."""
from __future__ import annotations

from magicmask.commstudy.grid import Cell
from magicmask.commstudy.runs import METRIC_NAMES, RunData
from magicmask.explain.stats import mean_sd, paired_differences, significant, t_interval


def _by_seed(cell: str, per_run: list[tuple[RunData, dict]]) -> dict[int, dict]:
    return {r.seed: m for r, m in per_run if r.cell == cell}


def effects(cells: list[Cell], per_run: list[tuple[RunData, dict]]) -> list[dict]:
    """Rows cell, axis, value, metric, n, diff, lo, hi, significant for every cell but the baseline and every
    quantity: n pairs (seeds where both runs have the quantity), diff their mean, [lo, hi] its 95% t interval
    (NaN below 2 pairs), significant '+' / '-' when the interval lies above / below 0. No rows without a
    baseline cell."""
    base = next((c for c in cells if c.axis == "baseline"), None)
    if base is None:
        return []
    ref = _by_seed(base.label, per_run)
    rows = []
    for cell in cells:
        if cell is base:
            continue
        mine = _by_seed(cell.label, per_run)
        seeds = sorted(set(mine) & set(ref))
        for name in METRIC_NAMES:
            d = paired_differences([mine[s][name] for s in seeds], [ref[s][name] for s in seeds])
            diff, _, n = mean_sd(d)
            ci = t_interval(d)
            rows.append({"cell": cell.label, "axis": cell.axis, "value": cell.value, "metric": name, "n": n,
                         "diff": diff, "lo": ci[0], "hi": ci[1], "significant": significant(ci)})
    return rows
