"""The one interface every explainer offers: fit once per agent, then a per-step importance for any recorded
episode of that agent (higher = more critical).

`fit` and `importance` are template methods: they time the work (wall clock; `fit_seconds` is set by fit,
`importance` adds to `score_seconds`) and check what a subclass returns (a finite float64 vector with one
entry per step), so every method's cost is recorded the same way. Subclasses implement `_fit` and
`_importance`.

Threads: fit and importance run torch on one thread (`one_thread`).

Randomness: `seeded(seed)` runs a block with torch's global generator forked and seeded, so an explainer is
deterministic given its seed and leaves the caller's torch random state untouched.
"""
from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod

import numpy as np
import torch
from threadpoolctl import ThreadpoolController

from magicmask.explain.episodes import Episode, TrainedRun


_ONE_THREAD_DEPTH = [0]                      # how many `one_thread` blocks this process is inside


@contextlib.contextmanager
def one_thread():
    """torch on one intra-op thread and numpy's BLAS on one thread inside the block (both restored afterwards):
    the explainers' networks are tiny, and on a busy small machine a second thread makes every small product many
    times slower (measured: StateMask's fit 2 s with one torch thread, 15 s with two on a loaded 2-core machine;
    the numpy inference's first layer, [4, 336] x [336, 512], 180 us with one OpenBLAS thread against 2,240 us
    with two while the two explanation workers ran: docs/BENCHMARKS.md, "Explaining: one BLAS thread")."""
    if _ONE_THREAD_DEPTH[0]:   # nested (an explainer's importance inside the explanation): already so
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    _ONE_THREAD_DEPTH[0] += 1
    try:
        # the BLAS libraries loaded now (~0.35 ms), not a cached list: one loaded later (scipy's own OpenBLAS,
        # first imported by a bootstrap interval) would otherwise keep its threads
        with ThreadpoolController().limit(limits=1, user_api="blas"):
            yield
    finally:
        _ONE_THREAD_DEPTH[0] -= 1
        torch.set_num_threads(before)


@contextlib.contextmanager
def seeded(seed: int):
    """torch's global RNG forked (restored afterwards) and seeded with `seed` inside the block."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed) & 0xFFFFFFFF)
        yield


def greedy_actions(logits: np.ndarray, legal: np.ndarray) -> np.ndarray:
    """argmax over the legal actions, per row (what the frozen target policy plays)."""
    return np.where(legal, logits.astype(np.float64), -np.inf).argmax(-1)


def random_other_legal(rng: np.random.Generator, legal: np.ndarray, own: int) -> int:
    """A uniform random legal action other than `own`; `own` itself when it is the only legal action."""
    idx = np.flatnonzero(legal)
    others = idx[idx != own]
    if len(others) == 0:
        return int(own)
    return int(others[rng.integers(len(others))])


class Explainer(ABC):
    """Per-step importance for the recorded episodes of one agent. One object per agent."""

    name: str = ""
    fit_seconds: float = 0.0
    score_seconds: float = 0.0
    env_steps: int = 0     # env steps the fit took beyond the recorded episodes (what a budget counts)
    n_params: int = 0      # trainable parameters of the explainer's own model

    def __init__(self, cfg):
        self.cfg = cfg
        self.agent: int | None = None
        self.fitted = False
        self.fit_seconds = 0.0
        self.score_seconds = 0.0
        self.env_steps = 0
        self.n_params = 0

    def fit(self, run: TrainedRun, agent: int, episodes: list[Episode], seed: int) -> None:
        """Prepare the explainer for `agent` of `run` (training where the method trains); `episodes` are
        recorded episodes of that agent (the offline methods learn from them). Sets `fit_seconds`."""
        if not 0 <= int(agent) < len(run.policies):
            raise ValueError(f"{self.name}: agent {agent} not in 0..{len(run.policies) - 1}")
        t0 = time.perf_counter()
        self.agent = int(agent)
        with one_thread():
            self._fit(run, int(agent), list(episodes), int(seed))
        self.fitted = True
        self.fit_seconds = time.perf_counter() - t0

    def importance(self, ep: Episode) -> np.ndarray:
        """[ep.length] float64, higher = more critical. Adds its wall clock to `score_seconds`."""
        if not self.fitted:
            raise RuntimeError(f"{self.name}: call fit() before importance()")
        t0 = time.perf_counter()
        with one_thread():
            imp = np.asarray(self._importance(ep), dtype=np.float64).reshape(-1)
        self.score_seconds += time.perf_counter() - t0
        if imp.shape != (ep.length,):
            raise RuntimeError(f"{self.name}: importance has shape {imp.shape}, expected ({ep.length},)")
        if not np.isfinite(imp).all():
            raise RuntimeError(f"{self.name}: non-finite importance for episode seed {ep.seed}")
        return imp

    @abstractmethod
    def _fit(self, run: TrainedRun, agent: int, episodes: list[Episode], seed: int) -> None:
        ...

    @abstractmethod
    def _importance(self, ep: Episode) -> np.ndarray:
        ...
