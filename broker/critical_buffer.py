"""The broker's shared memory of critical states: a bounded top-K buffer over every agent's reports.

Why this shape: agents report their highest-m states; the same state reported by
several agents should be one entry that remembers who found it (so a receiver can tell peers' knowledge
from its own), the buffer must stay bounded whatever the report rate, and old knowledge must make room
for new, which ageing does: every snapshot multiplies all scores by `age_decay`, so an entry that nobody
reports again sinks below fresh reports, and once its score falls below `min_score` it is forgotten, full
buffer or not (a state reported once and never again leaves after log(min_score / score) / log(age_decay)
snapshots). Without the floor a buffer that never fills would keep every key ever reported, and peers
would keep leaving those states unperturbed long after the finder stopped calling them critical.

Keys are unit-normalised float32 vectors, so cosine similarity is a dot product and matching one reported
key against the whole buffer is one matrix-vector product. Finders are a bit set of agent ids (bit i =
agent i found it), stored as uint64 and exported as int64 (the wire dtype, same bits); ids >= 64 do not fit
and are refused by `add`.
"""
from __future__ import annotations

import numpy as np

MAX_AGENTS = 64  # bits in a finder set


class CriticalBuffer:
    def __init__(self, capacity: int, key_dim: int, merge_rho: float, age_decay: float, min_score: float = 0.0):
        if capacity < 1 or key_dim < 1:
            raise ValueError(f"capacity={capacity} and key_dim={key_dim} must be >= 1")
        self.capacity, self.key_dim = int(capacity), int(key_dim)
        self.merge_rho, self.age_decay, self.min_score = float(merge_rho), float(age_decay), float(min_score)
        self.keys = np.zeros((capacity, key_dim), np.float32)
        self.scores = np.zeros(capacity, np.float64)
        self.finders = np.zeros(capacity, np.uint64)
        self.first_seen = np.zeros(capacity, np.int64)
        self.last_update = np.zeros(capacity, np.int64)
        self.size = 0
        self.merged = 0    # reported states that merged into an existing entry
        self.inserted = 0  # ... that became a new entry
        self.rejected = 0  # ... that scored too low for a full buffer (or had a zero key)
        self.expired = 0   # entries forgotten because their aged score fell below min_score

    @classmethod
    def from_config(cls, cfg) -> "CriticalBuffer":
        b = cfg.broker
        return cls(b.top_k, cfg.actor.key_dim, b.merge_rho, b.age_decay, b.min_score)

    def __len__(self) -> int:
        return self.size

    def add(self, keys: np.ndarray, scores: np.ndarray, agent: int, clock: int) -> None:
        """Merge or insert each reported state, the highest-scored first.

        A key within cosine `merge_rho` of an entry (the most similar one) merges into it: the higher score
        is kept, the finder bit is OR'd, the entry's key stays (a stable identity). Otherwise the key is
        inserted, evicting the lowest-scored entry when the buffer is full (a state scoring no higher than
        that one is not inserted). Keys inserted earlier in the same call can absorb later ones.
        """
        if not 0 <= agent < MAX_AGENTS:
            raise ValueError(f"agent {agent}: finder bit sets hold agent ids 0..{MAX_AGENTS - 1}")
        keys = np.asarray(keys, np.float32).reshape(-1, self.key_dim)
        scores = np.asarray(scores, np.float64).reshape(-1)
        if len(keys) != len(scores):
            raise ValueError(f"{len(keys)} keys but {len(scores)} scores")
        norms = np.linalg.norm(keys, axis=1)
        ok = (norms > 1e-12) & np.isfinite(norms) & np.isfinite(scores)
        self.rejected += int((~ok).sum())
        keys = keys[ok] / norms[ok, None]
        scores = scores[ok]
        bit = np.uint64(1) << np.uint64(agent)
        for i in np.argsort(-scores, kind="stable"):
            k, s = keys[i], float(scores[i])
            n = self.size
            if n:
                sims = self.keys[:n] @ k
                j = int(np.argmax(sims))
                if sims[j] >= self.merge_rho:
                    self.scores[j] = max(self.scores[j], s)
                    self.finders[j] |= bit
                    self.last_update[j] = clock
                    self.merged += 1
                    continue
            if n < self.capacity:
                j = n
                self.size += 1
            else:
                j = int(np.argmin(self.scores[:n]))
                if s <= self.scores[j]:
                    self.rejected += 1
                    continue
            self.keys[j], self.scores[j], self.finders[j] = k, s, bit
            self.first_seen[j] = self.last_update[j] = clock
            self.inserted += 1

    def age(self, times: int = 1) -> None:
        """Multiply every score by age_decay (once per snapshot), so unreported entries sink, then forget the
        entries whose score fell below min_score (the survivors keep their order)."""
        if times <= 0:
            return
        n = self.size
        self.scores[:n] *= self.age_decay ** times
        keep = np.flatnonzero(self.scores[:n] >= self.min_score)
        if len(keep) == n:
            return
        for arr in (self.keys, self.scores, self.finders, self.first_seen, self.last_update):
            arr[: len(keep)] = arr[keep]
        self.expired += n - len(keep)
        self.size = len(keep)

    def entries_for(self, receiver: int, sources_allowed: set[int] | None = None):
        """(keys[N,D] float32, scores[N] float32, finders[N] int64) for one receiver, best first.

        With `sources_allowed` (the receiver's topology neighbours) only entries found by at least one allowed
        source are included, and their finder bits are restricted to the allowed sources: a receiver learns
        nothing about agents it is not linked to. `receiver` is part of the contract for future per-receiver
        rules; the topology already includes the receiver itself.
        """
        n = self.size
        finders = self.finders[:n]
        if sources_allowed is not None:
            allowed = np.uint64(0)
            for a in sources_allowed:
                if 0 <= a < MAX_AGENTS:
                    allowed |= np.uint64(1) << np.uint64(a)
            finders = finders & allowed
            idx = np.flatnonzero(finders)
        else:
            idx = np.arange(n)
        idx = idx[np.argsort(-self.scores[idx], kind="stable")]
        return (self.keys[idx].copy(), self.scores[idx].astype(np.float32),
                finders[idx].view(np.int64).copy())
