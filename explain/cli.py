"""The `magicmask` command: `run` (every process on this machine), or one role per process (`broker`,
`learner`, `actor --agent I`) for several machines or pods. Every role reads the same config.

It lives in `explain` because explain is the one package allowed to import every role (DESIGN.md's
import rule); no role imports it.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from protocol import config as C


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
    for role in ("broker", "learner"):
        _common(sub.add_parser(role, help=f"run the {role} process"))
    a = sub.add_parser("actor", help="run the actor process of one agent")
    _common(a)
    a.add_argument("--agent", type=int, required=True, help="agent id, 0..run.agents-1")
    c = sub.add_parser("config", help="print the resolved config (with --reference: every field with its help)")
    _common(c)
    c.add_argument("--reference", action="store_true")
    return ap


def resolve(args) -> tuple[C.Config, Path]:
    overrides = list(args.set)
    for flag, key in (("env", "env.name"), ("agents", "run.agents"), ("steps", "run.total_steps"), ("name", "run.name")):
        if getattr(args, flag, None) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
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


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        cfg, run_dir = resolve(args)
        from actors.envs import env_spec
        spec = env_spec(cfg)  # a bad env fails here, before any process starts
    except C.ConfigError as e:
        print(f"magicmask: config error: {e}", file=sys.stderr)
        return 2
    if args.cmd == "config":
        print(C.describe() if args.reference else __import__("yaml").safe_dump(cfg.to_dict(), sort_keys=False))
        return 0
    run_dir.mkdir(parents=True, exist_ok=True)
    if args.cmd == "run":
        from explain.supervisor import Supervisor
        if cfg.learner.resume and not (run_dir / "checkpoints" / "latest").is_file():
            print(f"magicmask: --resume: no checkpoint in {run_dir / 'checkpoints'}", file=sys.stderr)
            return 2
        config_path = run_dir / "config.yaml"
        C.save(cfg, config_path)
        print(f"run directory: {run_dir}  (env {cfg.env.name}, {cfg.run.agents} agents, "
              f"{cfg.run.total_steps} steps each)", flush=True)
        return Supervisor(cfg, run_dir, config_path).run()
    _logging(cfg, args.cmd if args.cmd != "actor" else f"actor{args.agent}")
    if args.cmd == "broker":
        from broker.server import main as broker_main
        return broker_main(cfg, run_dir) or 0
    if args.cmd == "learner":
        from learner.server import main as learner_main
        return learner_main(cfg, spec, run_dir)
    if not 0 <= args.agent < cfg.run.agents:
        print(f"magicmask: --agent {args.agent}: allowed 0..{cfg.run.agents - 1} (run.agents={cfg.run.agents})", file=sys.stderr)
        return 2
    from actors.actor import main as actor_main
    return actor_main(cfg, args.agent, run_dir)


if __name__ == "__main__":
    sys.exit(main())
