"""Dropped messages: counted per cause in a Prometheus counter and logged at most once per cause per
interval (a flood of bad input must not become a flood of log lines)."""
from __future__ import annotations

import logging
import time

from prometheus_client import Counter

DROPPED = Counter("magicmask_dropped_messages", "Messages dropped by a receiver", ["socket", "cause"])


class DropLog:
    def __init__(self, logger: logging.Logger, interval_s: float = 10.0):
        self.log = logger
        self.interval_s = interval_s
        self._last: dict[tuple, float] = {}
        self._since: dict[tuple, int] = {}
        self.counts: dict[tuple, int] = {}

    def drop(self, socket: str, cause: str, detail: str) -> None:
        key = (socket, cause)
        DROPPED.labels(socket=socket, cause=cause).inc()
        self.counts[key] = self.counts.get(key, 0) + 1
        self._since[key] = self._since.get(key, 0) + 1
        now = time.monotonic()
        if now - self._last.get(key, -1e9) >= self.interval_s:
            n = self._since.pop(key)
            self._last[key] = now
            self.log.warning("dropped %d message(s) on %s (%s): %s", n, socket, cause, detail)

    def total(self, socket: str | None = None) -> int:
        return sum(v for (s, _), v in self.counts.items() if socket is None or s == socket)
