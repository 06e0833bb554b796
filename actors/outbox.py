"""Fragments on their way to the learner: sent oldest first, within credit (protocol/credit.py), and only
while the learner is heard.

Queue rule: while the learner is silent the actor keeps acting, and its fragments wait here; at most
`actor.offline_queue` of them: a new one beyond that drops the OLDEST, counted in
magicmask_actor_fragments_dropped_total{cause="offline_queue"}. While the learner is alive the actor collects
only with credit and an empty queue (`must_wait`), so drops happen only while it is silent. When the
learner is heard again the queue drains, oldest first, as credit and the pipe allow.
"""
from __future__ import annotations

from collections import deque

from prometheus_client import Counter, Gauge

from magicmask.actors.links import Links
from magicmask.protocol.credit import ActorCredit

FRAGMENTS = Counter("magicmask_actor_fragments", "Fragments sent to the learner", ["agent"])
FRAG_DROPPED = Counter("magicmask_actor_fragments_dropped", "Fragments dropped by the actor", ["agent", "cause"])
QUEUED = Gauge("magicmask_actor_fragment_queue", "Fragments waiting in the actor's local queue", ["agent"])


class Outbox:
    def __init__(self, limit: int, agent: int, credit: ActorCredit, links: Links):
        self.limit, self.credit, self.links = limit, credit, links
        self.queue: deque = deque()  # packed fragments not yet sent, oldest first
        self.dropped = 0             # fragments dropped from a full queue
        self.sent_counter = FRAGMENTS.labels(agent)
        self.dropped_counter = FRAG_DROPPED.labels(agent, "offline_queue")
        self.queued_gauge = QUEUED.labels(agent)

    def put(self, frames: list) -> None:
        """Queue a packed fragment (dropping the oldest beyond the limit) and send what can go; never blocks."""
        self.queue.append(frames)
        while len(self.queue) > self.limit:
            self.queue.popleft()
            self.dropped += 1
            self.dropped_counter.inc()
        self.flush()

    def flush(self) -> None:
        """Send queued fragments, oldest first, while the learner is alive, credit lasts and the pipe takes them."""
        while self.queue and self.links.learner.alive and self.credit.can_send():
            if not self.links.send_fragment(self.queue[0]):
                break  # pipe full: back-pressure, try again on the next turn
            self.queue.popleft()
            self.credit.on_sent()
            self.sent_counter.inc()
        self.queued_gauge.set(len(self.queue))

    def must_wait(self) -> bool:
        """Before collecting: with the learner alive, wait for credit and an empty queue; never while it is silent."""
        return self.links.learner.alive and (bool(self.queue) or not self.credit.can_send())
