"""Per-agent work of an explanation (fitting the explainers, the fidelity test's replays) in forked worker
processes: agents are independent and the work is pure CPU, so a 2-core machine does it in about half the time.

Forked, not spawned: a child reads the run, its episodes and whatever else the job holds from the parent's
memory as it was at the fork, and sends back only its result (pickled over the pool's pipe between our own
processes; nothing here reads a socket). torch stays on one thread in the children, as in the parent
(explain/baselines/base.one_thread), so no OpenMP pool is forked mid-use.
"""
from __future__ import annotations

import multiprocessing
import os
from typing import Callable

_JOB: dict = {}   # the job of the current map: set before the pool forks, cleared after


def job() -> dict:
    """What the function given to `map_agents` reads (the keyword arguments of that call)."""
    return _JOB


def worker_count(workers: int, n_agents: int) -> int:
    """explain.workers: 0 means one per CPU; never more than there are agents."""
    return max(1, min(n_agents, workers if workers > 0 else (os.cpu_count() or 1)))


def map_agents(fn: Callable[[int], object], agents: list[int], workers: int, **job_items) -> list:
    """[fn(a) for a in agents], in that order, in `worker_count` forked processes (in this one for 1, or where
    fork is not available). `fn` must be a module-level function; it reads `job_items` through `job()`."""
    _JOB.clear()
    _JOB.update(job_items)
    try:
        n = worker_count(workers, len(agents))
        if n <= 1 or "fork" not in multiprocessing.get_all_start_methods():
            return [fn(a) for a in agents]
        with multiprocessing.get_context("fork").Pool(n) as pool:
            return pool.map(fn, agents, chunksize=1)
    finally:
        _JOB.clear()
