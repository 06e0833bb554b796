"""The `magicmask` command: `run` (every process on this machine), or one role per process (`broker`,
`learner`, `actor --agent I`) for several machines or pods, all reading the same config; `explain RUN_DIR`,
`report RUN_DIR`, `compare RUN_DIR...`, `sweep`, `commstudy`, `curves RUN_DIR` and `strength RUN_DIR` work on
finished runs (sweep and commstudy start runs); `keys generate DIR` makes CURVE keys; `config` prints the resolved config.

Command glue only: parsing, messages and exit codes. The work is done by the Python API (api.py) and the
modules it names; a bad setting is reported before any process starts or any folder is made.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import yaml

from magicmask import __version__
from magicmask.keys import add_arguments as keys_arguments
from magicmask.protocol import config as C

SET_HELP = "override one config field, e.g. --set ppo.lr=3e-4 (repeatable)"
CONFIG_HELP = "YAML config file, or a preset's name (connect4, gates, highway, ...: deploy/configs/)"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help=f"{CONFIG_HELP}; default: <run-dir>/config.yaml if present")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help=SET_HELP)
    p.add_argument("--run-dir", help="run directory (default: <run.out_dir>/<run.name>)")


def _roles(sub) -> None:
    r = sub.add_parser("run", help="run broker, learner and one actor per agent on this machine")
    _common(r)
    r.add_argument("--env", help="shortcut for --set env.name=...")
    r.add_argument("--agents", type=int, help="shortcut for --set run.agents=...")
    r.add_argument("--steps", type=int, help="shortcut for --set run.total_steps=... (env steps per agent)")
    r.add_argument("--name", help="shortcut for --set run.name=...")
    r.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
    r.add_argument("--insecure", action="store_true",
                   help="allow a non-loopback net.host without CURVE keys (shortcut for --set net.insecure=true)")
    r.add_argument("--explain", action="store_true",
                   help="when training finished, run `magicmask explain` on the run (deploy/launch.sh does)")
    for role in ("broker", "learner"):
        _common(sub.add_parser(role, help=f"run the {role} process"))
    a = sub.add_parser("actor", help="run the actor process of one agent")
    _common(a)
    a.add_argument("--agent", type=int, required=True, help="agent id, 0..run.agents-1")
    c = sub.add_parser("config", help="print the resolved config (with --reference: every field with its help)")
    _common(c)
    c.add_argument("--reference", action="store_true")


def _finished_runs(sub) -> None:
    e = sub.add_parser("explain", help="explain a finished run: importance, fidelity test, metrics, report in "
                                       "RUN_DIR/report/")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--checkpoint", help="checkpoint file (default: the run's latest)")
    e.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a config field for this explanation, e.g. --set explain.episodes=20 (repeatable)")
    e.add_argument("--no-report", action="store_true", help="skip the HTML report")
    rp = sub.add_parser("report", help="(re)write RUN_DIR/report/index.html from an explained run's files")
    rp.add_argument("run_dir", metavar="RUN_DIR")
    cp = sub.add_parser("compare", help="explain runs with every method and tabulate the metrics (compare.md/.csv)")
    cp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    cp.add_argument("--out", help="folder of compare.md / compare.csv (default: the first run's parent folder)")
    cp.add_argument("--reuse", action="store_true", help="reuse RUN_DIR/report/metrics.json where present")
    cp.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                    help="override a config field when explaining (repeatable)")
    cp.add_argument("--no-report", action="store_true", help="skip rebuilding the HTML reports")
    sw = sub.add_parser("sweep", help="train a grid of configs x seeds, explain each, tabulate (sweep.md/.csv)")
    sw.add_argument("--config", required=True, help=f"{CONFIG_HELP}, of every run")
    sw.add_argument("--seeds", default="0,1,2", help="comma-separated run.seed values (default 0,1,2)")
    sw.add_argument("--grid", action="append", default=[], metavar="SECTION.FIELD=V1,V2",
                    help="a grid axis, e.g. --grid mask.tau=0.3,0.5 --grid comm.enabled=true,false (repeatable)")
    sw.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                    help="override a config field of every run (repeatable)")
    sw.add_argument("--out", required=True, help="sweep folder: runs/<cell>/seed<s>/, sweep.md, sweep.csv")
    sw.add_argument("--reuse", action="store_true",
                    help="skip runs that have a checkpoint and explanations already made; a kept run trained "
                         "with another config stops the sweep before anything runs")
    sw.add_argument("--dry-run", action="store_true", help="print the training commands and stop")
    from magicmask.commstudy import add_arguments as commstudy_arguments
    commstudy_arguments(sub.add_parser(
        "commstudy", help="train a one-factor-at-a-time grid over the broker's channel (latency, loss, bandwidth, "
                          "topology, NoComm) x seeds, explain each run, report (commstudy.csv/.md, index.html)"))
    cu = sub.add_parser("curves", help="learning curves of a run (metrics.jsonl): a PNG and the first and last "
                                        "evaluation per agent")
    cu.add_argument("run_dir", metavar="RUN_DIR")
    cu.add_argument("--out", help="PNG file (default: RUN_DIR/curves.png)")
    st = sub.add_parser("strength", help="play a finished run's agents against the env's built-in players "
                                         "(connect4), or as a team against their untrained networks (grf-3v1, "
                                         "highway): shares with 95%% intervals, RUN_DIR/strength.json")
    st.add_argument("run_dir", metavar="RUN_DIR")
    st.add_argument("--opponents", default="lookahead,search:2",
                    help="comma-separated built-in players (connect4: random, lookahead, search:<depth>); "
                         "team worlds have none and ignore it")
    st.add_argument("--games", type=int, default=100,
                    help="games per agent and opponent; in team worlds team episodes per side (default 100)")
    st.add_argument("--seed", type=int, default=0, help="seed of the games (default 0)")
    st.add_argument("--checkpoint", help="checkpoint file (default: the run's latest)")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="magicmask",
                                 description="Train teams of RL agents and explain them (MAGIC-MASK).")
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True)
    _roles(sub)
    _finished_runs(sub)
    keys_arguments(sub.add_parser("keys", help="CURVE keys: `magicmask keys generate DIR [--agents N]` "
                                               "(docs/DEPLOY.md)"))
    return ap


def resolve(args) -> tuple[C.Config, Path]:
    """The command's config (shortcut flags become overrides) and run directory."""
    from magicmask.api import default_run_dir, load_config
    overrides = list(args.set)
    shortcuts = (("env", "env.name"), ("agents", "run.agents"), ("steps", "run.total_steps"), ("name", "run.name"))
    for flag, key in shortcuts:
        if getattr(args, flag, None) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    if getattr(args, "insecure", False):
        overrides.append("net.insecure=true")
    if getattr(args, "resume", False):
        overrides.append("learner.resume=true")
    cfg_path = args.config
    if cfg_path is None and args.run_dir:   # a run's own config: what --resume continues, what roles share
        saved = Path(args.run_dir) / "config.yaml"
        if getattr(args, "resume", False) or (args.cmd != "run" and saved.is_file()):
            cfg_path = saved
    cfg = load_config(cfg_path, overrides)
    return cfg, Path(args.run_dir) if args.run_dir else default_run_dir(cfg)


def processes(args, cfg: C.Config) -> list[tuple[str, int | None]]:
    """(role, agent id) of the processes this command starts (`config`: all of them, to check their keys)."""
    from magicmask.api import every_process
    if args.cmd == "actor":
        if not 0 <= args.agent < cfg.run.agents:
            raise C.ConfigError(f"--agent {args.agent}: allowed 0..{cfg.run.agents - 1} (run.agents={cfg.run.agents})")
        return [("actor", args.agent)]
    return every_process(cfg) if args.cmd == "config" else [(args.cmd, None)]


def summary_table(ms: dict) -> str:
    """A short plain-text table of the headline metrics of metrics.json (printed by `explain`)."""
    keys = ["precision_at_k", "reward_drop_pct_k10", "control_reward_drop_pct_k10", "fidelity_score_k10",
            "kl_divergence", "inter_agent_fidelity", "fit_seconds"]
    lines = ["method".ljust(12) + "".join(k[:22].rjust(24) for k in keys)]
    for m, d in ms.items():
        lines.append(m.ljust(12) + "".join(("-" if d.get(k) is None else f"{d[k]:.4g}").rjust(24) for k in keys))
    return "\n".join(lines)


# ---------------- commands on finished runs ----------------
def _explain(args, argv) -> int:
    from magicmask.api import explain_run
    out = explain_run(args.run_dir, args.checkpoint, args.set, report=not args.no_report)
    print(summary_table(json.loads((out / "metrics.json").read_text())))
    print(f"report folder: {out}" + (f"  (open {out / 'index.html'})" if (out / "index.html").is_file() else ""))
    return 0


def _report(args, argv) -> int:
    from magicmask.report import write_report
    if not (Path(args.run_dir) / "config.yaml").is_file():
        raise FileNotFoundError(f"{args.run_dir} is not a run directory (no config.yaml)")
    print(f"report: {write_report(args.run_dir)}")
    return 0


def _curves(args, argv) -> int:
    from magicmask.curves import plot_curves, read_curves, summary
    curves = read_curves(args.run_dir)
    print("\n".join(summary(curves)))
    print(f"curves: {plot_curves(curves, args.out or Path(args.run_dir) / 'curves.png', Path(args.run_dir).name)}")
    return 0


def _strength(args, argv) -> int:
    from magicmask.strength import measure, table
    opponents = [o.strip() for o in args.opponents.split(",") if o.strip()]
    print(table(measure(args.run_dir, opponents, args.games, args.seed, args.checkpoint)))
    print(f"strength: {Path(args.run_dir) / 'strength.json'}")
    return 0


def _compare(args, argv) -> int:
    from magicmask.compare import run_compare
    out = run_compare(args.run_dirs, args.out, args.reuse, args.set, report=not args.no_report)
    print(f"comparison: {out / 'compare.md'}")
    return 0


def _sweep(args, argv) -> int:
    from magicmask.sweep import run_sweep
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    out = run_sweep(args.config, seeds, args.grid, args.out, args.set, args.reuse, args.dry_run)
    if not args.dry_run:
        print(f"sweep: {out / 'sweep.md'}")
    return 0


def _commstudy(args, argv) -> int:
    from magicmask.commstudy import main as commstudy_main
    return commstudy_main(args, argv)


def _keys(args, argv) -> int:
    from magicmask.keys import main as keys_main
    return keys_main(args)


OFFLINE = {"explain": _explain, "report": _report, "curves": _curves, "compare": _compare, "sweep": _sweep,
           "commstudy": _commstudy, "keys": _keys, "strength": _strength}


# ---------------- the processes of a run ----------------
def _run(args, cfg: C.Config, run_dir: Path) -> int:
    from magicmask.api import CannotStart, TrainingFailed, explain_run, train
    try:
        train(cfg, run_dir)
    except CannotStart as e:
        print(f"magicmask run: cannot start: {e}", file=sys.stderr)
        return 2
    except TrainingFailed as e:
        return e.code
    except KeyboardInterrupt:
        return 130
    if args.explain:
        print(f"explaining {run_dir} ({cfg.explain.episodes} episodes per agent, methods {cfg.explain.methods})",
              flush=True)
        explain_run(run_dir)
    return 0


def _role(args, cfg: C.Config, spec, run_dir: Path) -> int:
    """One process of a run in this process: broker, learner or actor."""
    run_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=cfg.run.log_level, stream=sys.stderr,
                        format=f"%(asctime)s {args.cmd if args.cmd != 'actor' else f'actor{args.agent}'} "
                               f"%(levelname)s %(name)s: %(message)s")
    if args.cmd == "broker":
        from magicmask.broker.server import main as broker_main
        return broker_main(cfg, run_dir) or 0
    if args.cmd == "learner":
        from magicmask.learner.server import main as learner_main
        return learner_main(cfg, spec, run_dir)
    from magicmask.actors.actor import main as actor_main
    return actor_main(cfg, args.agent, run_dir)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    if args.cmd in OFFLINE:
        try:
            return OFFLINE[args.cmd](args, argv)
        except (C.ConfigError, FileNotFoundError, ValueError, RuntimeError) as e:
            print(f"magicmask {args.cmd}: {type(e).__name__}: {e}", file=sys.stderr)
            return 2
    try:
        cfg, run_dir = resolve(args)
        if args.cmd == "run":
            return _run(args, cfg, run_dir)
        from magicmask.api import check_startable
        spec = check_startable(cfg, processes(args, cfg))
    except C.ConfigError as e:
        print(f"magicmask: config error: {e}", file=sys.stderr)
        return 2
    if args.cmd == "config":
        print(C.describe() if args.reference else yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        return 0
    return _role(args, cfg, spec, run_dir)


def exit_now(code: int) -> None:
    """End a process whose work is done at once: its sockets are closed (linger 0) and its files written and
    closed, so what is left is the interpreter's teardown, which with torch loaded took 2-4 s on a busy 2-core
    machine: longer than the supervisor's grace before it kills a child that was told to stop."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    rc = main()
    if len(sys.argv) > 1 and sys.argv[1] in ("run", "broker", "learner", "actor"):   # how the supervisor starts its children
        exit_now(rc)
    sys.exit(rc)
