"""Per-agent work of an explanation (fitting the explainers, the fidelity test's replays) in forked worker
processes: agents are independent and the work is pure CPU, so a 2-core machine does it in about half the time.

Forked, not spawned: a child reads the run, its episodes and whatever else the job holds from the parent's
memory as it was at the fork, and sends back only its result (pickled over the pool's pipe between our own
processes; nothing here reads a socket). A fork is only safe from a process without other Python threads (a
lock another thread holds at the fork stays held in the child), so with other threads running, or where fork
is not available, the agents run one after the other in this process; so they do, with a warning, for the
rest of the process's life when a worker died (concurrent.futures reports it; multiprocessing.Pool would
wait forever).
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable

log = logging.getLogger(__name__)

_JOB: dict = {}          # the job of the current map: set before the pool forks, cleared after
_BROKEN: list[str] = []  # why forking failed in this process, once it has


def job() -> dict:
    """What the function given to `map_agents` reads (the keyword arguments of that call)."""
    return _JOB


def worker_count(workers: int, n_agents: int) -> int:
    """explain.workers: 0 means one per CPU; never more than there are agents."""
    return max(1, min(n_agents, workers if workers > 0 else (os.cpu_count() or 1)))


def can_fork() -> bool:
    return not _BROKEN and threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods()


def map_agents(fn: Callable[[int], object], agents: list[int], workers: int, **job_items) -> list:
    """[fn(a) for a in agents], in that order, in `worker_count` forked processes when that is safe (see the
    module docstring), else in this one. `fn` must be a module-level function; it reads `job_items` through
    `job()`."""
    _JOB.clear()
    _JOB.update(job_items)
    try:
        n = worker_count(workers, len(agents))
        if n > 1 and can_fork():
            try:
                with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork")) as pool:
                    return list(pool.map(fn, agents))
            except BrokenProcessPool as e:
                _BROKEN.append(str(e))
                log.warning("explain: a worker process died (%s); the agents run in this process from now on", e)
        return [fn(a) for a in agents]
    finally:
        _JOB.clear()
