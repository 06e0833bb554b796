"""`magicmask sweep`: train one run per grid cell and seed (`magicmask run` in a subprocess on free ports, one
after the other: parallel runs would share the cores and distort each other's timings), explain each, then
write per cell a compare.{csv,md} (compare.py) and over the cells
  sweep.csv    cell,env,method,metric,mean,std,n_runs
  sweep.md     the paper's Tables 2-9 shape: per method a table with a metric per row, grid cells as columns.
The config and the output folder are made absolute before any run starts, so a sweep works from any directory.
"""
from __future__ import annotations

import itertools
import re
import subprocess
import sys
from pathlib import Path

from magicmask.compare import COMPARE_COLUMNS, aggregate, explain_runs, method_key, metric_key, write_compare
from magicmask.config_file import resolve_config
from magicmask.explain.stats import fmt_mean_sd
from magicmask.explain.tables import write_csv
from magicmask.protocol import config as C
from magicmask.protocol.transport import free_run_ports


def parse_grid(items) -> list[tuple[str, list[str]]]:
    """['mask.tau=0.3,0.5', 'comm.enabled=true,false'] -> [('mask.tau', ['0.3', '0.5']), ...]."""
    grid = []
    for it in items or []:
        if "=" not in it:
            raise ValueError(f"--grid {it!r}: expected section.field=v1,v2,...")
        k, vs = it.split("=", 1)
        vals = [v.strip() for v in vs.split(",") if v.strip()]
        if not vals:
            raise ValueError(f"--grid {it!r}: no values")
        grid.append((k.strip(), vals))
    return grid


def grid_cells(grid) -> list[list[str]]:
    """Every combination as a list of 'key=value' overrides ([[]] for an empty grid)."""
    if not grid:
        return [[]]
    return [[f"{k}={v}" for (k, _), v in zip(grid, combo)] for combo in itertools.product(*[vs for _, vs in grid])]


def cell_label(cell: list[str]) -> str:
    """A cell's name in the tables: its overrides, or 'default' for the config as given."""
    return ",".join(cell) if cell else "default"


def safe_name(label: str) -> str:
    """A label as a folder name (the characters a shell or a file system would trip on replaced)."""
    return re.sub(r"[^A-Za-z0-9._=,-]+", "_", label).replace(",", "__")


def run_dir(out: Path, cell: list[str], seed: int) -> Path:
    """Where a sweep into `out` keeps the run of `cell` and `seed`."""
    return Path(out) / "runs" / safe_name(cell_label(cell)) / f"seed{seed}"


METRICS_BLOCK = 2 + 256   # metrics ports of a run: broker, learner, and one per agent up to run.agents' maximum


def seed_overrides(seed: int, seed_fields=()) -> list[str]:
    """The fields a sweep sets to each run's seed: run.seed, explain.seed and those of `seed_fields`."""
    return [f"run.seed={seed}", f"explain.seed={seed}", *(f"{f}={seed}" for f in seed_fields)]


def train_command(config: Path, rd: Path, seed: int, cell: list[str], overrides, seed_fields=()) -> list[str]:
    """The `magicmask run` of one (cell, seed) on free ports; the seed varies training and the explainers' own
    randomness alike (baseline training, random windows), and every config field of `seed_fields` too (the
    communication study's comm.seed)."""
    ports, metrics = free_run_ports(len(C.PORT_FIELDS), METRICS_BLOCK)
    cmd = [sys.executable, "-m", "magicmask.cli", "run", "--config", str(config), "--run-dir", str(rd)]
    for o in [*seed_overrides(seed, seed_fields), "run.progress=false", *cell, *overrides,
              *C.port_overrides(ports, metrics_port=metrics)]:
        cmd += ["--set", o]
    return cmd


# Fields a reused run may differ in: where its processes listened and how they printed, not what they learnt.
REUSE_IGNORES = ("net.", "run.progress", "run.log_level", "run.name", "run.out_dir")


def _flat(cfg: C.Config) -> dict:
    """{'section.field': value} of a config."""
    return {f"{sec}.{k}": v for sec, fields in cfg.to_dict().items() for k, v in fields.items()}


def reuse_mismatches(rd: Path, wanted: C.Config) -> list[str]:
    """The fields in which the run kept in `rd` was trained with other values than this sweep would train it
    with now (a run of another design, e.g. another comm.seed rule, must not be reused as if it were this one)."""
    have, want = _flat(C.load(rd / "config.yaml")), _flat(wanted)
    return [f"{k}: the run has {have.get(k)!r}, this sweep sets {v!r}" for k, v in sorted(want.items())
            if not k.startswith(REUSE_IGNORES) and have.get(k) != v]


def check_reusable(path: Path, out: Path, cells, seeds, overrides, seed_fields=()) -> None:
    """--reuse: every run that would be reused has this sweep's config, else a ValueError naming the run and the
    fields before anything is trained."""
    problems = []
    for cell in cells:
        for s in seeds:
            rd = run_dir(out, cell, s)
            if (rd / "checkpoints" / "latest").is_file():
                bad = reuse_mismatches(rd, C.load(path, [*seed_overrides(s, seed_fields), *cell, *overrides]))
                problems += [f"{rd}: {b}" for b in bad]
    if problems:
        raise ValueError("sweep --reuse: runs kept in the sweep folder were trained with another config; remove "
                         "them or leave out --reuse:\n  " + "\n  ".join(problems))


def sweep_markdown(rows: list[dict], cells: list[str], title: str) -> str:
    """Per method a table: a metric per row, grid cells as columns, mean ± std over seeds."""
    lines = [f"# {title}", "", "Mean ± sample standard deviation over seeds; columns are the grid cells.", ""]
    idx = {(r["cell"], r["method"], r["metric"]): r for r in rows}
    for method in sorted({r["method"] for r in rows}, key=method_key):
        lines += [f"## {method}", "", "| metric | " + " | ".join(cells) + " |", "|---|" + "---|" * len(cells)]
        for m in sorted({r["metric"] for r in rows if r["method"] == method}, key=metric_key):
            vals = [idx.get((c, method, m)) for c in cells]
            lines.append(f"| {m} | " + " | ".join(fmt_mean_sd(v["mean"], v["std"], v["n_runs"]) if v else "–"
                                                  for v in vals) + " |")
        lines.append("")
    return "\n".join(lines)


def _train(cmd: list[str], rd: Path, timeout: float | None) -> None:
    """Run one training command with its output in RUN_DIR/sweep_train.log; RuntimeError when it fails."""
    rd.mkdir(parents=True, exist_ok=True)
    with open(rd / "sweep_train.log", "w") as f:
        res = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"sweep: training failed (exit {res.returncode}); see {rd / 'sweep_train.log'}")


def run_sweep(config: str, seeds: list[int], grid_items, out, overrides=(), reuse: bool = False,
              dry_run: bool = False, log=print, timeout: float | None = None, seed_fields=()) -> Path:
    """Train, explain and tabulate every (cell, seed) into `out` (dry_run: print the training commands only).
    `config`: a YAML file or a preset name. Every cell's config is loaded before anything runs, so a bad grid
    value fails at once, naming the field. `seed_fields`: config fields set to each run's seed besides
    run.seed and explain.seed."""
    path, out = resolve_config(config), Path(out).resolve()
    grid = parse_grid(grid_items)
    cells = grid_cells(grid)
    for cell in cells:
        C.load(path, [*cell, *overrides])
    if reuse:
        check_reusable(path, out, cells, seeds, overrides, seed_fields)
    if dry_run:
        for cell in cells:
            for s in seeds:
                log(" ".join(train_command(path, run_dir(out, cell, s), s, cell, overrides, seed_fields)))
        return out
    all_rows = []
    for cell in cells:
        label = cell_label(cell)
        for s in seeds:
            rd = run_dir(out, cell, s)
            if reuse and (rd / "checkpoints" / "latest").is_file():
                log(f"sweep: [{label}] seed {s}: reusing {rd}")
                continue
            log(f"sweep: [{label}] seed {s}: training in {rd}")
            _train(train_command(path, rd, s, cell, overrides, seed_fields), rd, timeout)
        entries = explain_runs([run_dir(out, cell, s) for s in seeds], reuse, (), log, report=False)
        write_compare(entries, out / "runs" / safe_name(label), f"Comparison of explainers, {label}")
        all_rows += [{"cell": label, **r} for r in aggregate(entries)]
    write_csv(out / "sweep.csv", ("cell",) + COMPARE_COLUMNS, all_rows)
    title = "Sweep: " + (", ".join(k for k, _ in grid) if grid else "seeds only") + f" (config {config})"
    (out / "sweep.md").write_text(sweep_markdown(all_rows, [cell_label(c) for c in cells], title))
    log(f"sweep: wrote {out / 'sweep.md'} and {out / 'sweep.csv'} ({len(cells) * len(seeds)} runs)")
    return out
