"""The `magicmask` command: `run` (every process on this machine), or one role per process (`broker`,
`learner`, `actor --agent I`) for several machines or pods. Every role reads the same config.
`explain RUN_DIR`, `compare RUN_DIR...` and `sweep` explain finished runs (explain/explain_cmd.py,
explain/compare.py); `commstudy` trains and explains a grid over the broker's channel (explain/commstudy.py).

It lives in `explain` because explain is the one package allowed to import every role (DESIGN.md's
import rule); no role imports it.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from magicmask.protocol import config as C


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config file (presets in deploy/configs/); default: <run-dir>/config.yaml if present")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override one config field, e.g. --set ppo.lr=3e-4 (repeatable)")
    p.add_argument("--run-dir", help="run directory (default: <run.out_dir>/<run.name>)")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="magicmask", description="Train teams of RL agents and explain them (MAGIC-MASK).")
    sub = ap.add_subparsers(dest="cmd", required=True)
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
    e = sub.add_parser("explain", help="explain a finished run: importance, fidelity test, metrics, report in RUN_DIR/report/")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--checkpoint", help="checkpoint file (default: the run's latest)")
    e.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a config field for this explanation, e.g. --set explain.episodes=20 (repeatable)")
    e.add_argument("--no-report", action="store_true", help="skip the HTML report")
    cp = sub.add_parser("compare", help="explain runs with every method and tabulate the metrics (compare.md/.csv)")
    cp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    cp.add_argument("--out", help="folder of compare.md / compare.csv (default: the first run's parent folder)")
    cp.add_argument("--reuse", action="store_true", help="reuse RUN_DIR/report/metrics.json where present")
    cp.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                    help="override a config field when explaining (repeatable)")
    cp.add_argument("--no-report", action="store_true", help="skip rebuilding the HTML reports")
    sw = sub.add_parser("sweep", help="train a grid of configs x seeds, explain each, tabulate (sweep.md/.csv)")
    sw.add_argument("--config", required=True, help="YAML config file of every run")
    sw.add_argument("--seeds", default="0,1,2", help="comma-separated run.seed values (default 0,1,2)")
    sw.add_argument("--grid", action="append", default=[], metavar="SECTION.FIELD=V1,V2",
                    help="a grid axis, e.g. --grid mask.tau=0.3,0.5 --grid comm.enabled=true,false (repeatable)")
    sw.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                    help="override a config field of every run (repeatable)")
    sw.add_argument("--out", required=True, help="sweep folder: runs/<cell>/seed<s>/, sweep.md, sweep.csv")
    sw.add_argument("--reuse", action="store_true", help="skip runs that have a checkpoint and explanations already made")
    sw.add_argument("--dry-run", action="store_true", help="print the training commands and stop")
    from magicmask.commstudy import add_arguments as commstudy_arguments
    commstudy_arguments(sub.add_parser(
        "commstudy", help="train a one-factor-at-a-time grid over the broker's channel (latency, loss, bandwidth, "
                          "topology, NoComm) x seeds, explain each run, report (commstudy.csv/.md, index.html)"))
    cu = sub.add_parser("curves", help="learning curves of a run (metrics.jsonl): a PNG and the first and last "
                                        "evaluation per agent")
    cu.add_argument("run_dir", metavar="RUN_DIR")
    cu.add_argument("--out", help="PNG file (default: RUN_DIR/curves.png)")
    sub.add_parser("keys", help="CURVE keys: `magicmask keys generate DIR [--agents N]` (see docs/DEPLOY.md)")
    c = sub.add_parser("config", help="print the resolved config (with --reference: every field with its help)")
    _common(c)
    c.add_argument("--reference", action="store_true")
    return ap


def resolve(args) -> tuple[C.Config, Path]:
    overrides = list(args.set)
    for flag, key in (("env", "env.name"), ("agents", "run.agents"), ("steps", "run.total_steps"), ("name", "run.name")):
        if getattr(args, flag, None) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    if getattr(args, "insecure", False):
        overrides.append("net.insecure=true")
    if getattr(args, "resume", False):
        overrides.append("learner.resume=true")
    cfg_path = args.config
    if cfg_path is None and args.run_dir and (Path(args.run_dir) / "config.yaml").is_file() and args.cmd != "run":
        cfg_path = str(Path(args.run_dir) / "config.yaml")
    if cfg_path is None and args.cmd == "run" and getattr(args, "resume", False) and args.run_dir:
        cfg_path = str(Path(args.run_dir) / "config.yaml")
    cfg = C.load(cfg_path, overrides)
    if args.run_dir:
        run_dir = Path(args.run_dir)
    else:
        if not cfg.run.name:
            cfg.run.name = f"{cfg.env.name.replace(':', '-').replace('.', '-')}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = Path(cfg.run.out_dir) / cfg.run.name
    return cfg, run_dir


def _logging(cfg: C.Config, role: str) -> None:
    logging.basicConfig(level=cfg.run.log_level, stream=sys.stderr,
                        format=f"%(asctime)s {role} %(levelname)s %(name)s: %(message)s")


def explain_main(args, argv: list[str] | None = None) -> int:
    """`explain`, `curves`, `compare`, `sweep` and `commstudy` (they read finished runs; sweep and commstudy start
    runs)."""
    try:
        if args.cmd == "commstudy":
            from magicmask.commstudy import main as commstudy_main
            return commstudy_main(args, argv)
        if args.cmd == "explain":
            from magicmask.explain_cmd import run_explain, summary_table
            if not (Path(args.run_dir) / "config.yaml").is_file():
                print(f"magicmask explain: {args.run_dir} is not a run directory (no config.yaml)", file=sys.stderr)
                return 2
            out = run_explain(args.run_dir, args.checkpoint, args.set, report=not args.no_report)
            print(summary_table(__import__("json").loads((out / "metrics.json").read_text())))
            print(f"report folder: {out}" + (f"  (open {out / 'index.html'})" if (out / "index.html").is_file() else ""))
            return 0
        if args.cmd == "curves":
            from magicmask.curves import plot_curves, read_curves, summary
            curves = read_curves(args.run_dir)
            print("\n".join(summary(curves)))
            print(f"curves: {plot_curves(curves, args.out or Path(args.run_dir) / 'curves.png', Path(args.run_dir).name)}")
            return 0
        if args.cmd == "compare":
            from magicmask.compare import run_compare
            out = run_compare(args.run_dirs, args.out, args.reuse, args.set, report=not args.no_report)
            print(f"comparison: {out / 'compare.md'}")
            return 0
        from magicmask.compare import run_sweep
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        out = run_sweep(args.config, seeds, args.grid, args.out, args.set, args.reuse, args.dry_run)
        if not args.dry_run:
            print(f"sweep: {out / 'sweep.md'}")
        return 0
    except (C.ConfigError, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"magicmask {args.cmd}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["keys"]:  # `magicmask keys generate DIR`: its own small parser (protocol/security.py)
        from magicmask.protocol.security import main as keys_main
        return keys_main(argv[1:])
    args = parser().parse_args(argv)
    if args.cmd in ("explain", "curves", "compare", "sweep", "commstudy"):
        return explain_main(args, argv)
    try:
        cfg, run_dir = resolve(args)
        from magicmask.actors.envs import env_spec
        spec = env_spec(cfg)  # a bad env fails here, before any process starts
        if cfg.security.keys_dir:  # missing or unreadable keys fail here too, not in a child's traceback
            from magicmask.protocol.security import for_process
            roles = [("broker", None), ("learner", None)] + [("actor", i) for i in range(cfg.run.agents)]
            for role, agent in roles if args.cmd in ("run", "config") else [(args.cmd, getattr(args, "agent", None))]:
                sec = for_process(cfg, role, agent)  # loads its key pair: ConfigError when missing
                if role == "actor":
                    sec.client("broker"), sec.client("learner")
    except C.ConfigError as e:
        print(f"magicmask: config error: {e}", file=sys.stderr)
        return 2
    if args.cmd == "config":
        print(C.describe() if args.reference else __import__("yaml").safe_dump(cfg.to_dict(), sort_keys=False))
        return 0
    run_dir.mkdir(parents=True, exist_ok=True)
    if args.cmd == "run":
        from magicmask.supervisor import Supervisor
        if cfg.learner.resume and not (run_dir / "checkpoints" / "latest").is_file():
            print(f"magicmask: --resume: no checkpoint in {run_dir / 'checkpoints'}", file=sys.stderr)
            return 2
        config_path = run_dir / "config.yaml"
        C.save(cfg, config_path)
        print(f"run directory: {run_dir}  (env {cfg.env.name}, {cfg.run.agents} agents, "
              f"{cfg.run.total_steps} steps each)", flush=True)
        code = Supervisor(cfg, run_dir, config_path).run()
        if code == 0 and args.explain:
            from magicmask.explain_cmd import run_explain
            print(f"explaining {run_dir} ({cfg.explain.episodes} episodes per agent, methods {cfg.explain.methods})",
                  flush=True)
            run_explain(run_dir)
        return code
    _logging(cfg, args.cmd if args.cmd != "actor" else f"actor{args.agent}")
    if args.cmd == "broker":
        from magicmask.broker.server import main as broker_main
        return broker_main(cfg, run_dir) or 0
    if args.cmd == "learner":
        from magicmask.learner.server import main as learner_main
        return learner_main(cfg, spec, run_dir)
    if not 0 <= args.agent < cfg.run.agents:
        print(f"magicmask: --agent {args.agent}: allowed 0..{cfg.run.agents - 1} (run.agents={cfg.run.agents})", file=sys.stderr)
        return 2
    from magicmask.actors.actor import main as actor_main
    return actor_main(cfg, args.agent, run_dir)


if __name__ == "__main__":
    sys.exit(main())
