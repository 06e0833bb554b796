"""Seeded per-link network impairment, applied in the broker's own send path.

Why in-process rather than the kernel's `tc netem`: over TCP netem "loss"
becomes retransmission stalls, not lost messages, needs NET_ADMIN, and is not reproducible. Here every
link (src, dst) -- agent ids, broker = -1 -- has its own random generator seeded from (comm.seed, src, dst),
so a run's losses and delays do not depend on how links interleave (MATE's per-message delay heap and
seeded dropout, done per link).

Per message, in this order:
- loss: `iid` (probability comm.loss) or `bursty` Gilbert-Elliott: a good state that never loses and a bad
  state that always loses, p(bad->good) = 1/burst_len (mean burst = burst_len messages) and
  p(good->bad) = loss * p_bg / (1 - loss) (stationary loss rate = loss; clamped to 1 where loss and
  burst_len make that impossible, e.g. loss > 0.5 with burst_len 1). A lost message is counted `dropped`.
- bandwidth: the link is busy for size/bps seconds per message; a message starts when the link is free
  (link-free-at time, equivalent to a token bucket of one message), so later messages queue behind.
- delay: latency + uniform [0, jitter], plus reorder_ms with probability comm.reorder (counted
  `reordered`: held back so that later messages may overtake it). Jitter alone can reorder too.
- release: `due(now)` hands back messages whose time has come, in release-time order (ties: submit order).

Bounded queues (the full-queue rule): at most `max_pending` (default 1000) messages wait per link; a new
message over that drops the link's OLDEST waiting message, counted as `overflow` (like a PUB socket at its
high-water mark, the newest snapshot is the one worth keeping: each is complete on its own).

Counters per link (attribute `counters[link]` and Prometheus `magicmask_link_messages_total{link,event}`,
`magicmask_link_bytes_total{link}`): sent (submitted), dropped (lost), delayed (released later than
submitted), reordered, overflow, bytes (of the messages not lost). Everything off (the default) means zero
delay, nothing dropped, immediate release.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import math
import time
from collections import deque

import numpy as np
from prometheus_client import Counter

log = logging.getLogger("broker.impairment")

LINK_EVENTS = Counter("magicmask_link_messages", "Messages per impaired link and event", ["link", "event"])
LINK_BYTES = Counter("magicmask_link_bytes", "Bytes of the messages not lost, per impaired link", ["link"])
EVENTS = ("sent", "dropped", "delayed", "reordered", "overflow")


def link_label(link: tuple[int, int]) -> str:
    return f"{link[0]}->{link[1]}"


class _Pending:
    __slots__ = ("release", "order", "link", "frames", "alive")

    def __init__(self, release, order, link, frames):
        self.release, self.order, self.link, self.frames, self.alive = release, order, link, frames, True

    def __lt__(self, other):
        return (self.release, self.order) < (other.release, other.order)


LINK_STREAM = 0x11AC   # a tag in every link's seed: no other generator of a run is seeded with it


class _Link:
    def __init__(self, seed: int, link: tuple[int, int], loss: float):
        # SeedSequence entropy must be non-negative: shift ids by 1 (broker -1 -> 0). LINK_STREAM keeps these
        # streams apart from the actors' ([run.seed, agent, restart]) when comm.seed = run.seed (the study's default)
        self.rng = np.random.default_rng([int(seed), LINK_STREAM, link[0] + 1, link[1] + 1])
        self.bad = bool(self.rng.random() < loss)  # start in the stationary distribution
        self.free_at = -math.inf
        self.queue: deque[_Pending] = deque()  # submit order; entries no longer alive are skipped
        self.pending = 0
        self.counters = dict.fromkeys((*EVENTS, "bytes"), 0)


class Impairment:
    def __init__(self, cfg_comm, clock=time.monotonic, max_pending: int = 1000):
        c = cfg_comm
        self.clock = clock
        self.max_pending = int(max_pending)
        self.seed = int(c.seed)
        self.latency = c.latency_ms / 1e3
        self.jitter = c.jitter_ms / 1e3
        self.loss = float(c.loss)
        self.bursty = c.loss_model == "bursty"
        self.reorder = float(c.reorder)
        self.reorder_delay = c.reorder_ms / 1e3
        self.bps = float(c.bandwidth_bps)
        self.p_bg = 1.0 / max(1.0, float(c.burst_len))
        self.p_gb = min(1.0, self.loss * self.p_bg / (1.0 - self.loss)) if self.loss > 0 else 0.0
        if self.bursty and self.loss > 0 and self.loss * self.p_bg / (1.0 - self.loss) > 1.0:
            log.warning("comm.loss=%s with burst_len=%s cannot be reached by Gilbert-Elliott; p(good->bad) "
                        "clamped to 1 (stationary loss %.3f)", c.loss, c.burst_len, 1 / (1 + self.p_bg))
        self.links: dict[tuple[int, int], _Link] = {}
        self._heap: list[_Pending] = []
        self._order = itertools.count()

    @property
    def counters(self) -> dict[tuple[int, int], dict[str, int]]:
        return {k: v.counters for k, v in self.links.items()}

    def _link(self, link) -> _Link:
        st = self.links.get(link)
        if st is None:
            st = self.links[link] = _Link(self.seed, link, self.loss)
        return st

    def _count(self, st: _Link, link, event: str, n: int = 1) -> None:
        st.counters[event] += n
        LINK_EVENTS.labels(link=link_label(link), event=event).inc(n)

    def _lost(self, st: _Link) -> bool:
        if self.loss <= 0:
            return False
        if not self.bursty:
            return bool(st.rng.random() < self.loss)
        lost = st.bad  # loss probability 1 in the bad state, 0 in the good one
        st.bad = bool(st.rng.random() >= self.p_bg) if st.bad else bool(st.rng.random() < self.p_gb)
        return lost

    def submit(self, link: tuple[int, int], frames, size_bytes: int, now: float | None = None) -> bool:
        """Schedule a message on a link; False if the loss model dropped it."""
        now = self.clock() if now is None else now
        link = (int(link[0]), int(link[1]))
        st = self._link(link)
        self._count(st, link, "sent")
        if self._lost(st):
            self._count(st, link, "dropped")
            return False
        st.counters["bytes"] += int(size_bytes)
        LINK_BYTES.labels(link=link_label(link)).inc(int(size_bytes))
        start = now
        if self.bps > 0:
            start = max(now, st.free_at)
            st.free_at = start + size_bytes / self.bps
            start = st.free_at  # the last byte has left
        delay = self.latency
        if self.jitter > 0:
            delay += st.rng.uniform(0.0, self.jitter)
        if self.reorder > 0 and st.rng.random() < self.reorder:
            delay += self.reorder_delay
            self._count(st, link, "reordered")
        release = start + delay
        if release > now:
            self._count(st, link, "delayed")
        while st.pending >= self.max_pending:  # bounded: the oldest waiting message leaves
            old = st.queue.popleft()
            if old.alive:
                old.alive = False
                st.pending -= 1
                self._count(st, link, "overflow")
        p = _Pending(release, next(self._order), link, frames)
        st.queue.append(p)
        st.pending += 1
        heapq.heappush(self._heap, p)
        return True

    def due(self, now: float | None = None) -> list[tuple[tuple[int, int], object]]:
        """Messages whose release time has come, in release-time order."""
        now = self.clock() if now is None else now
        out = []
        while self._heap and self._heap[0].release <= now:
            p = heapq.heappop(self._heap)
            if not p.alive:
                continue
            p.alive = False
            st = self.links[p.link]
            st.pending -= 1
            while st.queue and not st.queue[0].alive:
                st.queue.popleft()
            out.append((p.link, p.frames))
        return out

    def next_due(self) -> float | None:
        """Release time of the earliest waiting message, or None when nothing waits."""
        while self._heap and not self._heap[0].alive:
            heapq.heappop(self._heap)
        return self._heap[0].release if self._heap else None

    def pending(self, link=None) -> int:
        if link is not None:
            st = self.links.get(link)
            return st.pending if st else 0
        return sum(st.pending for st in self.links.values())
