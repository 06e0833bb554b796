"""A study's plan (config, seeds, cells, folder, target rule, comm.seed design), its check before any process
starts, and the description with a wall-clock estimate printed before anything runs."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from magicmask.commstudy.grid import Cell, StudyError
from magicmask.protocol import config as C

# Rates behind the up-front estimate, for gates with an evaluation after every fragment (the commstudy-gates
# preset) on an idle 2-core machine; basis in docs/COMMUNICATION.md: a run costs a fixed part (start-up of 6
# processes, checkpoint, in-process `magicmask explain` of MAGIC-MASK with 4 agents x 20 episodes) plus its env
# steps at the whole system's throughput.
GATES_FIXED_S = 16.0
GATES_SYSTEM_STEPS_PER_S = 1500.0

# Where the channel's randomness (which messages are lost, the random-k graph: comm.seed) comes from.
COMM_SEEDS = {
    "per-seed": "comm.seed = run.seed: each seed draws its own loss pattern and random-k graph, and the same "
                "seed draws the same one in every cell, so the paired differences compare like with like",
    "fixed": "comm.seed as the config sets it, for every seed: all seeds see one loss pattern (common random "
             "numbers: the seeds vary training, not the channel)",
}


@dataclass
class Study:
    """Everything a study needs to run and to report: the config, seeds, cells, folder and target rule."""
    config: str                                           # an absolute path (the runs start elsewhere)
    seeds: list[int]
    cells: list[Cell]
    out: Path
    overrides: list[str] = field(default_factory=list)  # --set, for every run
    target: float | None = None                           # None: auto
    target_fraction: float = 0.9
    reuse: bool = False
    command: str = ""
    comm_seed: str = "per-seed"                           # a key of COMM_SEEDS


def check_cells(study: Study) -> C.Config:
    """Load the config with every cell's overrides before any process starts (a bad value fails here, naming
    the field, the value and what is allowed). Returns the baseline's config."""
    configs = [C.load(study.config, [*study.overrides, *cell.overrides]) for cell in study.cells]
    base = configs[0]
    if base.run.agents < 2:
        raise StudyError(f"run.agents={base.run.agents}: a communication study needs at least 2 agents")
    return base


def seed_fields(study: Study) -> tuple[str, ...]:
    """The config fields every run sets to its run.seed besides run.seed and explain.seed (run_sweep's)."""
    return ("comm.seed",) if study.comm_seed == "per-seed" else ()


def estimate_seconds(study: Study, cfg: C.Config) -> float | None:
    """Wall-clock estimate of the whole study on an idle 2-core machine; None outside gates (no measured rates)."""
    if cfg.env.name != "gates":
        return None
    per_run = GATES_FIXED_S + cfg.run.agents * cfg.run.total_steps / GATES_SYSTEM_STEPS_PER_S
    return per_run * len(study.cells) * len(study.seeds)


def describe_plan(study: Study, cfg: C.Config) -> str:
    """The cells with their overrides, the number of runs, the estimate and the comm.seed design (printed
    before anything runs)."""
    n = len(study.cells) * len(study.seeds)
    est = estimate_seconds(study, cfg)
    lines = [f"commstudy: {len(study.cells)} cells x {len(study.seeds)} seeds = {n} runs of {study.config} "
             f"({cfg.env.name}, {cfg.run.agents} agents, {cfg.run.total_steps} env steps each)",
             "estimate on an idle 2-core machine: " + (f"{est / 60:.0f} min (gates rates, docs/COMMUNICATION.md)"
                                                      if est is not None else f"none (rates are measured on gates, "
                                                                              f"not {cfg.env.name})"),
             f"comm.seed ({study.comm_seed}): {COMM_SEEDS[study.comm_seed]}"
             + (f"; here {cfg.comm.seed}" if study.comm_seed == "fixed" else ""),
             f"study folder: {study.out}"]
    if len(study.seeds) < 2:
        lines.append("note: one seed gives no 95% intervals (a t interval needs at least 2 seeds per cell)")
    lines += [f"  {c.label:24s} {' '.join(c.overrides) or '(the config as given)'}" for c in study.cells]
    return "\n".join(lines)
