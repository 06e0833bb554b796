"""`magicmask run`: starts the broker, the learner and one actor per agent as separate processes, shows
one live progress view, restarts processes that die, and stops everything cleanly.

Rules:
- Any process that exits with an error (or is killed) is restarted: an actor with a new incarnation, the
  learner from the run's latest checkpoint (`learner.resume_if_checkpoint`: weights, versions and env steps
  continue from it; the updates made after it are lost and their metrics.jsonl rows dropped), the broker with
  an empty buffer that the actors' next reports refill (docs/DEPLOY.md, "Restarts", has the measurement).
- Each restart of a process waits twice as long as its previous one (0.5 s, 1 s, 2 s, ... at most 30 s), back
  to 0.5 s once it had run STABLE_S (60 s) before dying (so a process killed now and then in a long run is
  not kept waiting 30 s for its crashes of long ago), and a process is restarted at most `run.max_restarts`
  times (actors: `run.max_actor_restarts` when an old config
  sets it); one more death stops the run and shows its log tail.
- A broker or actor that exits with status 0 was told the run is over (the learner's Stop) and is left alone.
- The run ends when the learner exits with status 0 (every agent reached `run.total_steps`). Ctrl-C or
  SIGTERM sends SIGTERM to every child, waits up to 4 s, then kills what is left (every child runs in its own
  session, so no orphan survives).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from magicmask.protocol.config import Config


BACKOFF_S, BACKOFF_MAX_S, STABLE_S = 0.5, 30.0, 60.0


@dataclass
class Child:
    name: str
    args: list[str]
    max_restarts: int
    budget_field: str = "run.max_restarts"                  # where max_restarts comes from, for messages
    restart_args: list[str] = field(default_factory=list)   # added to args from the first restart on
    proc: subprocess.Popen | None = None
    restarts: int = 0
    started: list[float] = field(default_factory=list)
    due: float | None = None       # monotonic time of a scheduled restart
    streak: int = 0                # restarts since the process last ran STABLE_S or longer

    def backoff(self, ran_s: float) -> float:
        """Seconds before the next restart of a process that died after running `ran_s` seconds: doubled after
        each restart in a streak of short lives, capped; a life of STABLE_S or more ends the streak."""
        if ran_s >= STABLE_S:
            self.streak = 0
        wait = min(BACKOFF_S * 2 ** self.streak, BACKOFF_MAX_S)
        self.streak += 1
        return wait


def tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def scrape(port: int, host: str = "127.0.0.1") -> dict[tuple, float]:
    """Samples of one process's Prometheus endpoint as {(name, labels...): value}; empty when unreachable."""
    if not port:
        return {}
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=0.5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, *sorted(s.labels.items()))] = s.value
    return out


class Rate:
    """Per-second rate of a Prometheus counter from the samples the supervisor scrapes, over the last
    `window_s` seconds. As PromQL's rate(): a counter that went down was reset (its process restarted) and
    counts from zero again, so its new value is all increase."""

    def __init__(self, window_s: float = 10.0):
        self.window_s = window_s
        self.samples: deque[tuple[float, float]] = deque()  # (time, increase since the first sample)
        self.increase = 0.0
        self.last: float | None = None

    def add(self, t: float, value: float | None) -> None:
        if value is None:  # not exposed yet, or the process is unreachable
            return
        if self.last is not None:
            self.increase += value - self.last if value >= self.last else value
        self.last = value
        self.samples.append((t, self.increase))
        while len(self.samples) > 2 and self.samples[1][0] <= t - self.window_s:
            self.samples.popleft()

    def per_second(self) -> float | None:
        """None until two samples some time apart."""
        if len(self.samples) < 2 or self.samples[-1][0] <= self.samples[0][0]:
            return None
        (t0, v0), (t1, v1) = self.samples[0], self.samples[-1]
        return (v1 - v0) / (t1 - t0)


class Supervisor:
    def __init__(self, cfg: Config, run_dir: Path, config_path: Path):
        self.cfg, self.run_dir = cfg, run_dir
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        base = [sys.executable, "-m", "magicmask.cli"]
        common = ["--config", str(config_path), "--run-dir", str(run_dir)]
        budget = cfg.run.max_restarts
        actors = (budget, "run.max_restarts") if cfg.run.max_actor_restarts < 0 else \
            (cfg.run.max_actor_restarts, "run.max_actor_restarts")
        self.children = [Child("broker", [*base, "broker", *common], budget),
                         Child("learner", [*base, "learner", *common], budget,
                               restart_args=["--set", "learner.resume_if_checkpoint=true"])]
        self.children += [Child(f"actor{i}", [*base, "actor", "--agent", str(i), *common], *actors)
                          for i in range(cfg.run.agents)]
        self.stopping = False
        self.t0 = time.time()
        self.step_rates = [Rate() for _ in range(cfg.run.agents)]  # env steps/s trained on, per agent
        self.last_answer: dict[str, dict] = {}   # role -> its last scrape that answered (read)

    def start(self, child: Child) -> None:
        log = open(self.run_dir / "logs" / f"{child.name}.log", "ab")
        # one BLAS thread per process unless the user says otherwise: every process is one core's worth of work,
        # and OpenBLAS's default threads made the broker's batched key matching 10x slower (docs/BENCHMARKS.md)
        env = {"OPENBLAS_NUM_THREADS": "1", **os.environ, "PYTHONUNBUFFERED": "1", "MAGICMASK_RESTART": str(child.restarts)}
        args = child.args + (child.restart_args if child.restarts else [])
        child.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True, env=env)
        log.close()
        child.started.append(time.time())
        child.due = None

    def stop_all(self, grace_s: float = 4.0) -> None:
        for c in self.children:
            if c.proc and c.proc.poll() is None:
                try:
                    os.killpg(c.proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace_s
        for c in self.children:
            if c.proc is None:
                continue
            try:
                c.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(c.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                c.proc.wait()

    def _on_signal(self, *_):
        self.stopping = True

    def status(self) -> dict:
        """One snapshot of the run, read from the processes' own metrics endpoints (docs/PROMETHEUS.md); rates
        from the counters' increase between scrapes."""
        cfg = self.cfg
        host = cfg.net.metrics_host if cfg.net.metrics_host not in ("0.0.0.0", "") else "127.0.0.1"
        now = time.time()
        lm, fresh = self.read("learner", host)
        bm, _ = self.read("broker", host)
        agents = []
        for i in range(cfg.run.agents):
            a = (("agent", str(i)),)
            if fresh:   # a held sample is no new reading of the counter
                self.step_rates[i].add(now, lm.get(("magicmask_learner_env_steps_total", *a)))
            agents.append({
                "steps": lm.get(("magicmask_learner_agent_env_steps", *a), 0.0),
                "sps": self.step_rates[i].per_second(),
                "return": lm.get(("magicmask_learner_mean_return", *a)),
                "keep": lm.get(("magicmask_learner_keep_rate", *a)),
                "lag": lm.get(("magicmask_learner_policy_lag", *a)),
                "win_random": lm.get(("magicmask_learner_eval", *a, ("name", "vs_random_win"))),
                "precision": lm.get(("magicmask_learner_eval", *a, ("name", "precision_at_k"))),
                "restarts": self.children[2 + i].restarts,
            })
        rates = [a["sps"] for a in agents if a["sps"] is not None]
        return {"elapsed": now - self.t0, "version": lm.get(("magicmask_learner_policy_version",), 0.0),
                "sps": sum(rates) if rates else None,
                "snapshot_seq": bm.get(("magicmask_broker_snapshot_seq",)), "agents": agents}

    def read(self, role: str, host: str) -> tuple[dict, bool]:
        """(samples, fresh): the role's metrics, or its last answered ones when a scrape found no answer within
        its 0.5 s. A busy process on a loaded machine misses a scrape now and then; the status line then keeps
        its last figures instead of showing zeros and blanks. Empty until the role first answers."""
        samples = scrape(self.cfg.metrics_port_of(role), host)
        if samples:
            self.last_answer[role] = samples
        return samples or self.last_answer.get(role, {}), bool(samples)

    def render(self, st: dict):
        from rich.table import Table

        def f(v, fmt):
            return "-" if v is None else format(v, fmt)
        t = Table(title=f"MAGIC-MASK {self.run_dir.name}  {st['elapsed']:.0f}s  policy v{st['version']:.0f}  "
                        f"{f(st['sps'], '.0f')} steps/s  broker snapshot #{f(st['snapshot_seq'], '.0f')}")
        for col in ("agent", "env steps", "steps/s", "mean return", "keep-rate m", "policy lag", "win vs random",
                    "precision@k", "restarts"):
            t.add_column(col, justify="right")
        for i, a in enumerate(st["agents"]):
            t.add_row(str(i), f"{a['steps']:.0f}/{self.cfg.run.total_steps}", f(a["sps"], ".0f"),
                      f(a["return"], ".3f"), f(a["keep"], ".2f"), f(a["lag"], ".0f"), f(a["win_random"], ".2f"),
                      f(a["precision"], ".2f"), str(a["restarts"]))
        return t

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        for c in self.children:
            self.start(c)
        live = None
        if self.cfg.run.progress and sys.stdout.isatty():
            from rich.live import Live
            live = Live(self.render(self.status()), refresh_per_second=2)
            live.start()
        last_line = 0.0
        code, finished = 0, False
        try:
            while not self.stopping:
                time.sleep(0.25)
                if finished := self.children[1].proc.poll() == 0:
                    print(f"learner finished: {tail(self.run_dir / 'logs' / 'learner.log', 1)}", flush=True)
                    break
                if (code := self.tend()) != 0:
                    break
                now = time.time()
                if live is not None and now - last_line > 1.0:
                    live.update(self.render(self.status()))
                    last_line = now
                elif live is None and self.cfg.run.progress and now - last_line > 10.0:
                    st = self.status()
                    rets = " ".join("-" if a["return"] is None else f"{a['return']:.2f}" for a in st["agents"])
                    sps = "-" if st["sps"] is None else f"{st['sps']:.0f}"
                    print(f"[{st['elapsed']:.0f}s] v{st['version']:.0f} {sps} steps/s "
                          f"steps={[int(a['steps']) for a in st['agents']]} returns={rets}", flush=True)
                    last_line = now
        finally:
            if live is not None:
                live.update(self.render(self.status()))
                live.stop()
            self.stop_all()
        if self.stopping and code == 0 and not finished:   # Ctrl-C or SIGTERM before the end
            code = 130
        print(f"run directory: {self.run_dir}", flush=True)
        return code

    def tend(self) -> int:
        """Schedule a restart for every child that died, start those that are due; 1 (after printing why) when
        one died with its restart budget spent."""
        now = time.monotonic()
        for c in self.children:
            if c.due is not None:
                if now >= c.due:
                    self.start(c)
                continue
            rc = c.proc.poll()
            if rc is None or rc == 0:   # running, or (broker, actor) told that the run is over
                continue
            if c.restarts >= c.max_restarts:
                return self._failed(c, f"its restart budget is spent ({c.restarts} of {c.max_restarts}, "
                                       f"{c.budget_field})")
            wait = c.backoff(time.time() - c.started[-1])
            c.restarts += 1
            c.due = now + wait
            print(f"{c.name} exited with {rc}; restarting in {wait:.1f} s ({c.restarts}/{c.max_restarts})",
                  flush=True)
        return 0

    def _failed(self, child: Child, why: str) -> int:
        log = self.run_dir / "logs" / f"{child.name}.log"
        print(f"\n{child.name} exited with code {child.proc.returncode} and {why}; the run stops. Last lines of "
              f"{log}:\n{tail(log)}", file=sys.stderr, flush=True)
        return 1
