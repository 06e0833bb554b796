"""The actor's side of the critical-state exchange with the broker: the window of states it reports up,
and the snapshot it receives, with the guidance that snapshot gives (a step whose state a peer marked
critical is left unperturbed).

Snapshot rule (the ZeroMQ guide's Clone pattern, receiver side; broker/server.py is the sender): apply a
snapshot only if its seq is greater than the last one applied (the stream may repeat what the state reply
gave, and reordering may deliver an old one late); a jump from s to s' > s + 1 counts s' - s - 1 gaps;
a snapshot from a new broker incarnation is applied whatever its seq (a restarted broker counts from 1
again). Delay = receive time - body["created_at"].

Channel figures (`comm`): cumulative snapshot-use figures of this actor incarnation, sent with every
fragment so that the learner's metrics.jsonl keeps what the Prometheus series forget when the run ends (the
communication study reads them); cumulative, so a dropped fragment loses nothing.
"""
from __future__ import annotations

import time

import numpy as np
from prometheus_client import Counter, Gauge

from magicmask.actors.state_keys import best_match
from magicmask.protocol import messages as M
from magicmask.protocol.config import Config

SNAP_SEQ = Gauge("magicmask_actor_snapshot_seq", "Sequence number of the latest snapshot used", ["agent"])
SNAP_GAPS = Counter("magicmask_actor_snapshot_gaps", "Snapshots missed (sequence-number gaps)", ["agent"])
SNAP_AGE = Gauge("magicmask_actor_snapshot_delay_seconds", "Delivery delay of the latest snapshot", ["agent"])
GUIDED = Counter("magicmask_actor_guided_steps", "Steps left unperturbed because a peer marked them critical",
                 ["agent"])


class ReportWindow:
    """The states seen since the last report; a CriticalReport carries the highest-m (least perturbable) ones
    whose m reaches `actor.report_min_m`: only states this agent is confident are critical."""

    def __init__(self, cfg: Config):
        self.top, self.min_m = cfg.actor.report_top, cfg.actor.report_min_m
        self.keys: list[np.ndarray] = []
        self.scores: list[np.ndarray] = []
        self.steps: list[np.ndarray] = []
        self.positions: list[np.ndarray] = []

    def add(self, keys: np.ndarray, m: np.ndarray, env_steps: int, positions: np.ndarray) -> None:
        """One step of every copy: their state keys, keep-probabilities, the step clock, positions in episode."""
        self.keys.append(keys)
        self.scores.append(m)
        self.steps.append(np.full(len(m), env_steps, np.int64))
        self.positions.append(positions.astype(np.int32))

    def take(self) -> dict | None:
        """The report's arrays (possibly no state: it still moves the broker's clock); None if nothing was seen."""
        if not self.scores:
            return None
        scores = np.concatenate(self.scores).astype(np.float32)
        top = np.argsort(-scores, kind="stable")[: self.top]
        top = top[scores[top] >= self.min_m]
        arrays = {"keys": np.concatenate(self.keys)[top].astype(np.float32), "scores": scores[top],
                  "steps": np.concatenate(self.steps)[top], "positions": np.concatenate(self.positions)[top]}
        self.keys, self.scores, self.steps, self.positions = [], [], [], []
        return arrays


class Guidance:
    """The snapshot in use (peers' critical states) and the steps it guides."""

    def __init__(self, cfg: Config, agent: int):
        self.agent = agent
        self.not_own = ~M.finder_mask([agent], cfg.run.agents)  # finder bits of everyone but this agent
        self.enabled = cfg.comm.enabled
        self.rho, self.prob = cfg.actor.guidance_rho, cfg.actor.guidance_prob
        self.seq = 0                  # of the snapshot in use (0: none yet from this broker incarnation)
        self.incarnation = None       # broker incarnation of the snapshot in use
        self.created: float | None = None  # broker's created_at (wall clock) of the snapshot in use
        self.keys = np.zeros((0, cfg.actor.key_dim), np.float32)  # peers' critical states in it
        self.scores = np.zeros(0)                                  # their scores (guidance weights)
        self.comm = {"snapshots_received": 0, "snapshots_applied": 0, "snapshot_gaps": 0, "delay_s_sum": 0.0,
                     "steps": 0, "use_steps": 0, "age_at_use_s_sum": 0.0, "stale_steps": 0, "guided_steps": 0}
        self.seq_gauge, self.gaps_counter = SNAP_SEQ.labels(agent), SNAP_GAPS.labels(agent)
        self.delay_gauge, self.guided_counter = SNAP_AGE.labels(agent), GUIDED.labels(agent)

    def on_snapshot(self, msg: M.Message, stream: bool) -> None:
        """Apply a snapshot if it is newer. `stream`: it came on the (impaired) PUB stream, not as a state reply."""
        self.comm["snapshots_received"] += int(stream)
        if msg.incarnation != self.incarnation:
            self.seq = 0  # a (re)started broker counts from 1 again: its first snapshot is taken whatever its seq
            self.incarnation = msg.incarnation
        elif msg.seq <= self.seq:
            return
        if self.seq and msg.seq > self.seq + 1:
            self.gaps_counter.inc(msg.seq - self.seq - 1)
            self.comm["snapshot_gaps"] += msg.seq - self.seq - 1
        self.seq = msg.seq
        self.seq_gauge.set(msg.seq)
        delay = max(0.0, time.time() - msg.body["created_at"])
        self.delay_gauge.set(delay)
        self.created = float(msg.body["created_at"])
        self.comm["snapshots_applied"] += 1
        self.comm["delay_s_sum"] += delay
        others = (msg.arrays["finders"] & self.not_own).any(axis=1)  # found by someone besides this agent
        self.keys = np.ascontiguousarray(msg.arrays["keys"][others])
        self.scores = np.clip(np.asarray(msg.arrays["scores"][others], np.float64), 0.0, 1.0)

    def guide(self, keys: np.ndarray, broker_alive: bool, rng: np.random.Generator) -> np.ndarray:
        """Which of the E states (their keys) a peer marked critical, each guided with probability
        `actor.guidance_prob` x the matching entry's score (its finder's aged keep-probability, in [0, 1]): a
        state reported long ago, or with little confidence, guides seldom, and one that has left the
        broker's buffer not at all. Counts the snapshot's use."""
        n = len(keys)
        self.comm["steps"] += n
        if self.enabled and self.created is not None:  # a snapshot is in use: its age now
            self.comm["use_steps"] += n
            self.comm["age_at_use_s_sum"] += n * max(0.0, time.time() - self.created)
            self.comm["stale_steps"] += n * (not broker_alive)
        if not (self.enabled and len(self.keys)):
            return np.zeros(n, bool)
        sims, match = best_match(keys, self.keys)
        guided = (sims >= self.rho) & (rng.random(n) < self.prob * self.scores[match])
        self.guided_counter.inc(int(guided.sum()))
        self.comm["guided_steps"] += int(guided.sum())
        return guided
