"""The Python API: what `magicmask run` and `magicmask explain` do, as functions for scripts and notebooks.
They return paths and raise exceptions (never exit the interpreter); the command line (cli.py) is a thin
layer over them.

    import magicmask
    run_dir = magicmask.train("gates", overrides=["run.agents=2", "run.total_steps=4000"])
    report = magicmask.explain_run(run_dir)          # RUN_DIR/report/, with index.html
    policies = magicmask.load_run(run_dir).policies  # one trained agent each: greedy(obs, legal), forward(obs)
"""
from __future__ import annotations

import copy
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from magicmask.config_file import resolve_config
from magicmask.preflight import CannotStart as CannotStart  # re-exported: train raises it
from magicmask.preflight import check_ports, check_run_dir, take_ports
from magicmask.protocol import config as C

if TYPE_CHECKING:   # importing it loads torch and the envs: only load_run needs them
    from magicmask.explain.episodes import TrainedRun


class TrainingFailed(RuntimeError):
    """`train` stopped before every agent reached run.total_steps: a process failed (its log tail was printed;
    every log is in run_dir/logs/). `code` is the supervisor's exit status."""

    def __init__(self, run_dir: Path, code: int):
        super().__init__(f"training in {run_dir} failed (exit status {code}); logs in {run_dir / 'logs'}")
        self.run_dir, self.code = run_dir, code


def load_config(path_or_preset: str | Path | None = None, overrides=()) -> C.Config:
    """The validated config of a YAML file or an installed preset (`"connect4"`, `"gates"`; None: the
    defaults), with `section.field=value` overrides and the address environment variables applied."""
    return C.load(None if path_or_preset is None else resolve_config(path_or_preset), list(overrides))


def load_run(run_dir: str | Path, checkpoint: str | Path | None = None) -> TrainedRun:
    """A trained run: its config and one inference-only policy per agent (`.policies[i].greedy(obs, legal)`,
    `.forward(obs)` -> logits, value, keep-probability m, mask value), from the final or the given checkpoint."""
    from magicmask.explain.episodes import load_run as load
    return load(run_dir, checkpoint)


def train(config: C.Config | str | Path, run_dir: str | Path | None = None, overrides=()) -> Path:
    """Train with every process on this machine, as `magicmask run` does, and return the run directory.

    `config`: a Config, a YAML file or a preset name; `overrides`: `section.field=value` items (e.g.
    "learner.resume=true" continues `run_dir` from its last checkpoint). A bad setting raises ConfigError
    before any process starts or any folder is made; CannotStart, before any process starts, says this machine
    cannot host the run (a configured port in use, a run directory it cannot write or that lacks room); a
    failed process raises TrainingFailed; Ctrl-C or SIGTERM stops every process and raises KeyboardInterrupt.
    Call it from the main thread: the supervisor handles SIGINT and SIGTERM while it runs (the caller's
    handlers are restored afterwards)."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("magicmask.train must be called from the main thread (it handles SIGINT and SIGTERM)")
    cfg = _config(config, overrides)
    run_dir = Path(run_dir) if run_dir else default_run_dir(cfg)
    check_startable(cfg, every_process(cfg))
    if cfg.learner.resume and not (run_dir / "checkpoints" / "latest").is_file():
        raise C.ConfigError(f"learner.resume=true: no checkpoint in {run_dir / 'checkpoints'}")
    taken = take_ports(cfg)
    check_ports(cfg)
    check_run_dir(run_dir, cfg.run.min_free_mb)
    config_path = run_dir / "config.yaml"
    C.save(cfg, config_path)
    print(f"run directory: {run_dir}  (env {cfg.env.name}, {cfg.run.agents} agents, "
          f"{cfg.run.total_steps} steps each)", flush=True)
    if taken:
        print(f"free ports taken (net.auto_ports): {' '.join(i.removeprefix('net.') for i in taken)}", flush=True)
    code = _supervise(cfg, run_dir, config_path)
    if code == 130:
        raise KeyboardInterrupt(f"training in {run_dir} was stopped")
    if code:
        raise TrainingFailed(run_dir, code)
    return run_dir


def explain_run(run_dir: str | Path, checkpoint: str | Path | None = None, overrides=(), *, report: bool = True,
                methods: list[str] | None = None, explainer_factory=None, log=print) -> Path:
    """Explain a finished run, as `magicmask explain` does, and return its report folder RUN_DIR/report/
    (importance.csv, fidelity.csv, critical_states.jsonl, metrics.json, summary.json and, with `report`,
    index.html). `overrides`: `section.field=value` items for this explanation (e.g. explain.episodes=20);
    `methods` and `explainer_factory(name, cfg)` replace the configured explainers (your own one included)."""
    from magicmask.explain.pipeline import write_explanations
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml)")
    out = write_explanations(run_dir, checkpoint, overrides, methods=methods, explainer_factory=explainer_factory,
                             log=log)
    if report:
        from magicmask.report import write_report
        log(f"explain: report: {write_report(run_dir)}")
    return out


# ---------------- shared with the command line ----------------
def default_run_dir(cfg: C.Config) -> Path:
    """<run.out_dir>/<run.name>; an empty run.name becomes <env>-<timestamp> (set in cfg, so it is saved)."""
    if not cfg.run.name:
        cfg.run.name = f"{cfg.env.name.replace(':', '-').replace('.', '-')}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(cfg.run.out_dir) / cfg.run.name


def every_process(cfg: C.Config) -> list[tuple[str, int | None]]:
    """(role, agent id) of every process of a run."""
    return [("broker", None), ("learner", None)] + [("actor", i) for i in range(cfg.run.agents)]


def check_startable(cfg: C.Config, processes):
    """The run's EnvSpec, or a ConfigError now rather than in a child's traceback later: the env must build,
    the networks the ppo and mask settings ask for must fit it (one agent's of each group are built once), and
    with security.keys_dir every process's key pair (and an actor's servers' public keys) must load."""
    from magicmask.actors.envs import env_spec
    from magicmask.models.networks import build_nets
    from magicmask.protocol.security import for_process
    spec = env_spec(cfg)
    for _shape, agents in spec.groups():
        try:
            build_nets(spec.for_agent(agents[0]), cfg.ppo, cfg.mask, 1, seed=0)
        except ValueError as e:
            raise C.ConfigError(str(e)) from e
    for role, agent in processes if cfg.security.keys_dir else ():
        sec = for_process(cfg, role, agent)
        if role == "actor":
            sec.client("broker"), sec.client("learner")
    return spec


def _config(config, overrides) -> C.Config:
    if not isinstance(config, C.Config):
        return load_config(config, overrides)
    cfg = copy.deepcopy(config)   # the caller's object stays as it was (run.name may be filled in)
    for item in overrides:
        C.set_value(cfg, *C.parse_override(item))
    return C.validate(cfg)


def _supervise(cfg: C.Config, run_dir: Path, config_path: Path) -> int:
    from magicmask.supervisor import Supervisor
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return Supervisor(cfg, run_dir, config_path).run()
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
