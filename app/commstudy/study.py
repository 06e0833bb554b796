"""Running a study and writing its folder: every (cell, seed) trained and explained through `magicmask sweep`'s
run_sweep, one cell after the other (the runs share the machine's cores; parallel runs would only slow each
other down and distort the timings), each run's comm.seed as the study's design says; then the target, the
quantities, the effects, the csv, md, html, img/ and study.json."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from magicmask.commstudy import figures
from magicmask.commstudy.page import html_page
from magicmask.commstudy.effects import effects
from magicmask.commstudy.plan import Study, seed_fields
from magicmask.commstudy.runs import RunData, aggregate, best_return, read_run, run_metrics
from magicmask.commstudy.tables import CELL_COLUMNS, EFFECT_COLUMNS, RUN_COLUMNS, markdown
from magicmask.explain.tables import write_csv
from magicmask.machine import machine_line
from magicmask.config_file import resolve_config
from magicmask.sweep import check_reusable, run_dir, run_sweep, safe_name


def resolve_target(study: Study, runs: list[RunData]) -> tuple[float | None, str]:
    """The return that counts as reached, and how it was set: given, or a fraction of the best any agent reached."""
    if study.target is not None:
        return study.target, "given with --target-return"
    best = best_return(runs)
    basis = (f"{study.target_fraction:g} x the highest evaluation return any agent reached"
             + ("" if best is None else f", {best:g}"))
    return (None if best is None else study.target_fraction * best), basis


def write_outputs(study: Study, runs: list[RunData], meta: dict) -> list[dict]:
    """Resolve the target, compute and aggregate every quantity and its effects, write the csv, md, html and
    img/ files."""
    meta["target"], meta["target_basis"] = resolve_target(study, runs)
    per_run = [(r, run_metrics(r, meta["target"])) for r in runs]
    rows = aggregate(study.cells, per_run)
    diffs = effects(study.cells, per_run)
    out = study.out
    (out / "img").mkdir(parents=True, exist_ok=True)
    write_csv(out / "commstudy_runs.csv", RUN_COLUMNS,
              [{"cell": r.cell, "seed": r.seed, "run_dir": str(r.run_dir), "error": r.error, **m} for r, m in per_run])
    write_csv(out / "commstudy.csv", CELL_COLUMNS, rows)
    write_csv(out / "commstudy_effects.csv", EFFECT_COLUMNS, diffs)
    (out / "commstudy.md").write_text(markdown(study, rows, diffs, meta))
    pngs = figures.draw(study, rows, per_run, diffs, meta["target"])
    for stem, data in pngs.items():
        (out / "img" / f"{stem}.png").write_bytes(data)
    (out / "index.html").write_text(html_page(study, rows, diffs, runs, meta, pngs), encoding="utf-8")
    (out / "study.json").write_text(json.dumps({
        "command": meta["command"], "config": study.config, "seeds": study.seeds, "overrides": study.overrides,
        "comm_seed": study.comm_seed,
        "cells": [{"label": c.label, "axis": c.axis, "value": c.value, "overrides": list(c.overrides)}
                  for c in study.cells],
        **{k: meta[k] for k in ("runs", "wall_s", "machine", "load_start", "load_end", "target", "target_basis")}},
        indent=1))
    return rows


def run_study(study: Study, log=print) -> Path:
    """Train and explain every (cell, seed) through run_sweep, one cell after the other, then write the outputs.
    A cell whose training or explanation fails is reported (its runs' quantities empty), and the study goes on.
    With --reuse every kept run is checked against its cell's config first (check_reusable), for all cells."""
    if study.reuse:
        config = resolve_config(study.config)
        for cell in study.cells:
            check_reusable(config, study.out / "cells" / safe_name(cell.label), [[]],
                           study.seeds, [*study.overrides, *cell.overrides], seed_fields(study))
    t0 = time.monotonic()
    load_start = os.getloadavg()[0]
    study.out.mkdir(parents=True, exist_ok=True)
    runs: list[RunData] = []
    total = len(study.cells) * len(study.seeds)
    for i, cell in enumerate(study.cells):
        cell_dir = study.out / "cells" / safe_name(cell.label)
        what = " ".join(cell.overrides) or "the config as given"
        log(f"commstudy: [{i + 1}/{len(study.cells)}] {cell.label}: {what}")
        error = None
        try:
            run_sweep(study.config, study.seeds, [], cell_dir, [*study.overrides, *cell.overrides], study.reuse,
                      log=log, seed_fields=seed_fields(study))
        except (RuntimeError, ValueError, OSError) as e:  # one broken cell must not take the study down
            error = f"{type(e).__name__}: {e}"
            log(f"commstudy: {cell.label}: FAILED: {error}")
        runs += [read_run(cell.label, s, run_dir(cell_dir, [], s), error) for s in study.seeds]
        done, elapsed = (i + 1) * len(study.seeds), time.monotonic() - t0
        log(f"commstudy: {done}/{total} runs in {elapsed / 60:.1f} min; about "
            f"{elapsed / done * (total - done) / 60:.1f} min left")
    meta = {"command": study.command, "runs": total, "wall_s": time.monotonic() - t0, "machine": machine_line(),
            "load_start": load_start, "load_end": os.getloadavg()[0]}
    write_outputs(study, runs, meta)
    log(f"commstudy: wrote {study.out / 'commstudy.csv'}, commstudy_effects.csv, commstudy.md and index.html "
        f"({meta['wall_s'] / 60:.1f} min)")
    return study.out
