"""The options of `magicmask commstudy` and their check: every option has a default and a help text, and a bad
one raises StudyError naming the option, the value and what is allowed, before anything runs."""
from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

from magicmask.commstudy.grid import AXES, StudyError, build_grid, parse_values
from magicmask.commstudy.plan import COMM_SEEDS, Study, check_cells
from magicmask.config_file import resolve_config
from magicmask.protocol import config as C

DEFAULT_CONFIG = "commstudy-gates"   # a preset (magicmask.presets)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `magicmask commstudy` (every one has a default and a help text)."""
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help=f"YAML config file or preset name of every run (default {DEFAULT_CONFIG})")
    p.add_argument("--out", default=None,
                   help="study folder: commstudy.csv/.md, index.html, img/, cells/<cell>/ (default "
                        "runs/commstudy-<date>-<time>)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated run.seed values (default 0,1,2)")
    p.add_argument("--axes", default=",".join(AXES),
                   help=f"comma-separated axes varied one at a time from the baseline (default {','.join(AXES)})")
    p.add_argument("--full", action="store_true",
                   help="use every axis's full value list instead of the default subset; an explicit "
                        "--latency/--loss/... still wins")
    kind = {"loss": " with comm.loss_model=iid", "burst": " with comm.loss_model=bursty (Gilbert-Elliott, "
                                                        "mean burst comm.burst_len)"}
    for ax in AXES.values():
        p.add_argument(f"--{ax.name}", default=None, metavar="V1,V2",
                       help=f"values of {ax.field}{kind.get(ax.name, '')} ({ax.allowed}); default "
                            f"{','.join(ax.default)}, with --full {','.join(ax.full)}")
    p.add_argument("--jitter", type=float, default=0.2,
                   help="jitter of a latency cell as a fraction of its latency: comm.jitter_ms = J x latency "
                        "(default 0.2)")
    p.add_argument("--random-k", type=int, default=1,
                   help="comm.random_k of the random-k topology cell (default 1: each agent hears one peer)")
    p.add_argument("--nocomm", action=argparse.BooleanOptionalAction, default=True,
                   help="include the NoComm reference cell, comm.enabled=false (default: yes)")
    p.add_argument("--target-return", default="auto",
                   help="evaluation return that counts as 'reached' for steps-to-target; auto: --target-fraction "
                        "x the highest evaluation return any agent of the study reached (default auto)")
    p.add_argument("--target-fraction", type=float, default=0.9,
                   help="the fraction of the auto target (default 0.9)")
    p.add_argument("--comm-seed", choices=tuple(COMM_SEEDS), default="per-seed",
                   help="where the channel's randomness (comm.seed: which messages are lost, the random-k graph) "
                        "comes from. per-seed: comm.seed = run.seed, so each seed has its own loss pattern and a "
                        "seed has the same one in every cell (it replaces the config's comm.seed); fixed: the "
                        "config's comm.seed for every seed, one loss pattern for all (default per-seed)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a config field of every run, e.g. --set run.total_steps=20000 (repeatable)")
    p.add_argument("--reuse", action="store_true",
                   help="skip runs of --out that have a checkpoint and explanations already (resume a study); a kept "
                        "run trained with another config (e.g. the other --comm-seed design) stops the study first")
    p.add_argument("--dry-run", action="store_true", help="print the cells, the runs and the estimate, and stop")


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0:
        raise StudyError(f"--seeds: {text!r} is not allowed; allowed: comma-separated integers >= 0")
    return seeds


def _axis_values(args, axes: list[str]) -> dict[str, list[str]]:
    """Every axis's values: given, else its full or default list; a value given for an axis not varied fails."""
    values = {}
    for name, ax in AXES.items():
        given = getattr(args, name)
        if given is not None and name not in axes:
            raise StudyError(f"--{name} {given}: the axis {name!r} is not in --axes={args.axes!r}, so its values "
                             f"would be ignored; allowed: add it to --axes or leave --{name} out")
        values[name] = parse_values(name, given if given is not None else
                                    ",".join(ax.full if args.full else ax.default))
    return values


def _check_comm_seed(design: str, overrides: list[str]) -> None:
    """Under per-seed each run sets comm.seed itself; a --set comm.seed would silently make it fixed."""
    given = [o for o in overrides if o.split("=", 1)[0].strip() == "comm.seed"]
    if design == "per-seed" and given:
        raise StudyError(f"--set {given[0]}: --comm-seed per-seed sets comm.seed = run.seed in every run; allowed: "
                         "--comm-seed fixed with it, or leave comm.seed out")


def _target(text: str) -> float | None:
    if str(text).strip().lower() == "auto":
        return None
    try:
        return float(text)
    except ValueError:
        raise StudyError(f"--target-return: {text!r} is not allowed; allowed: auto or a number") from None


def study_from_args(args, argv=None) -> tuple[Study, C.Config]:
    """Validate every option (StudyError names it) and the cells' configs; the study and its baseline config.
    The config and the folder are made absolute: the runs start in subprocesses, from any directory."""
    seeds = _seeds(args.seeds)
    axes = [a.strip() for a in args.axes.split(",") if a.strip()]
    values = _axis_values(args, axes)
    target = _target(args.target_return)
    if not 0.0 < args.target_fraction <= 1.0:
        raise StudyError(f"--target-fraction: {args.target_fraction!r} is out of range; allowed: (0, 1]")
    cells = build_grid(axes, values, args.jitter, args.random_k, args.nocomm)
    _check_comm_seed(args.comm_seed, args.set)
    out = Path(args.out) if args.out else Path("runs") / f"commstudy-{time.strftime('%Y%m%d-%H%M%S')}"
    command = "magicmask " + shlex.join(argv) if argv else "magicmask.commstudy.main (from Python)"
    study = Study(str(resolve_config(args.config)), seeds, cells, out.resolve(), list(args.set), target,
                  args.target_fraction, args.reuse, command, args.comm_seed)
    return study, check_cells(study)
