"""`magicmask commstudy`: how the channel between the broker and the actors (latency, loss, bandwidth,
topology: the impairment model of broker/impairment.py) changes learning and explanations.

Design: one factor at a time. A baseline cell (the config's comm settings: with the presets, sharing on
and no impairment) and, for every selected axis (latency with jitter, iid loss, bursty loss, bandwidth cap,
topology), one cell per value with only that axis changed; plus the NoComm ablation (comm.enabled=false) as
the reference that tells whether sharing matters at all. A full factorial grid would multiply the runs
(4 latencies x 9 losses x 4 caps x 4 topologies x seeds) beyond any 2-core budget, and the question asked is
"what does each impairment do", which the one-factor design answers.

Every cell is trained for every seed and explained by `run_sweep` (sweep.py: `magicmask run` in a
subprocess with free ports, then `magicmask explain`), one run after the other (the runs share the machine's
cores; parallel runs would only slow each other down and distort the timings). The channel's randomness
(comm.seed: which messages are lost, the random-k graph) follows --comm-seed: per-seed (default) sets
comm.seed = run.seed, so the seeds draw different loss patterns and a seed draws the same one in every cell
(its runs stay paired); fixed keeps the config's comm.seed for every seed. Per run it reads:
  metrics.jsonl           the learner's rows: the actors' evaluation returns (greedy, and with the mask in
                          its explaining mode) per agent at its env steps, and the actors' cumulative
                          snapshot-use figures (body "comm" of their fragments: received, applied, gaps,
                          delivery delay, age of the snapshot in use at each step, stale steps, guided steps)
  critical/snapshots.jsonl  the broker's rounds and which receivers the loss model dropped in each
  report/metrics.json     explain's MAGIC-MASK metrics (fidelity score at K = 10%, inter-agent fidelity,
                          precision at k, final average return)
A quantity a run does not have (no evaluations, explain failed, comm off: no snapshot in use) is left empty,
never filled in. The study folder gets:
  commstudy_runs.csv      one row per run (cell, seed) with every quantity
  commstudy.csv           one row per cell: mean, sample standard deviation, count and 95% Student-t interval
                          of the mean over the seeds (<quantity>_ci_lo, <quantity>_ci_hi) of every quantity
  commstudy_effects.csv   one row per cell other than the baseline and quantity: the effect cell - baseline,
                          paired over the seeds both cells have (n pairs, diff = their mean, lo/hi = its 95% t
                          interval, significant = +/- when that excludes 0)
  commstudy.md            the same as tables (mean [lo, hi]; effect [lo, hi] +/-), with the plan, target,
                          comm.seed design, definitions and wall time
  index.html              the figures (embedded PNGs: one self-contained file) and the tables
  img/*.png               the figures as files (for docs/): learning, channel, curves, and effects (the effect
                          against latency and against loss, with its interval)
  study.json              the plan, the comm.seed design, the target and the wall time
  cells/<cell>/           run_sweep's output per cell (runs/default/seed<s>/ run directories, sweep.md)

Modules: grid (axes and cells), plan (the study, its comm.seed design, check and estimate), options (the command
line), runs (reading a run, its quantities, per-cell aggregation), effects (paired differences from the
baseline), tables, figures, page (index.html), study (running it and writing the folder).
"""
from __future__ import annotations

from magicmask.commstudy.options import add_arguments, study_from_args
from magicmask.commstudy.plan import describe_plan
from magicmask.commstudy.study import run_study

__all__ = ["add_arguments", "main", "run_study"]


def main(args, argv=None, log=print) -> int:
    """`magicmask commstudy` (the command line hands its parsed arguments and its argv here)."""
    study, cfg = study_from_args(args, argv)
    log(describe_plan(study, cfg))
    if args.dry_run:
        return 0
    run_study(study, log)
    return 0
