"""The broker's shared memory of critical states: a bounded top-K buffer over every agent's reports.

Why this shape: agents report their highest-m states; the same state reported by
several agents should be one entry that remembers who found it (so a receiver can tell peers' knowledge
from its own), the buffer must stay bounded whatever the report rate, and old knowledge must make room
for new, which ageing does: every snapshot multiplies all scores by `age_decay`, so an entry that nobody
reports again sinks below fresh reports, and once its score falls below `min_score` it is forgotten, full
buffer or not (a state reported once and never again leaves after log(min_score / score) / log(age_decay)
snapshots). Without the floor a buffer that never fills would keep every key ever reported, and peers
would keep leaving those states unperturbed long after the finder stopped calling them critical.

Keys are unit-normalised float32 vectors, so cosine similarity is a dot product and matching a report's
keys against the whole buffer is one matrix product. Finders are a packed bitmap per entry, agent i at bit
i % 8 of byte i // 8 (the snapshot's wire format: `protocol.messages.finder_bytes`), so a buffer holds as
many agents as it is made for.

Cost: the rule of `add` is one key at a time, highest score first. `add` computes the same result for a
whole report at once (one matrix product against the buffer, a partial sort to make room): a fixed number of
numpy calls per report instead of several per key, as the broker runs it for every report of every agent. It
falls back to the key-by-key loop only when the report's keys interact: two of them within merge_rho of each
other, or a key that merges into an entry which a higher-scored key of the same report evicts.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from magicmask.protocol.messages import finder_bytes, finder_mask


class CriticalBuffer:
    def __init__(self, capacity: int, key_dim: int, merge_rho: float, age_decay: float, min_score: float = 0.0,
                 *, agents: int):
        if capacity < 1 or key_dim < 1 or agents < 1:
            raise ValueError(f"capacity={capacity}, key_dim={key_dim} and agents={agents} must be >= 1")
        self.capacity, self.key_dim, self.agents = int(capacity), int(key_dim), int(agents)
        self.merge_rho, self.age_decay, self.min_score = float(merge_rho), float(age_decay), float(min_score)
        self.keys = np.zeros((capacity, key_dim), np.float32)
        self.scores = np.zeros(capacity, np.float64)
        self.finders = np.zeros((capacity, finder_bytes(agents)), np.uint8)
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
        return cls(b.top_k, cfg.actor.key_dim, b.merge_rho, b.age_decay, b.min_score, agents=cfg.run.agents)

    def __len__(self) -> int:
        return self.size

    def add(self, keys: np.ndarray, scores: np.ndarray, agent: int, clock: int) -> None:
        """Merge or insert each reported state, the highest-scored first.

        A key within cosine `merge_rho` of an entry (the most similar one) merges into it: the higher score
        is kept, the finder bit is set, the entry's key stays (a stable identity). Otherwise the key is
        inserted, evicting the lowest-scored entry when the buffer is full (a state scoring no higher than
        that one is not inserted). Keys inserted earlier in the same call can absorb later ones.
        """
        if not 0 <= agent < self.agents:
            raise ValueError(f"agent {agent}: this buffer's finder bitmaps hold agent ids 0..{self.agents - 1}")
        keys = np.asarray(keys, np.float32).reshape(-1, self.key_dim)
        scores = np.asarray(scores, np.float64).reshape(-1)
        if len(keys) != len(scores):
            raise ValueError(f"{len(keys)} keys but {len(scores)} scores")
        if len(scores) == 0:
            return
        norms = np.sqrt(np.einsum("ij,ij->i", keys, keys))
        if not (np.isfinite(norms.sum() + scores.sum()) and norms.min() > 1e-12):  # else find which
            ok = (norms > 1e-12) & np.isfinite(norms) & np.isfinite(scores)
            self.rejected += len(ok) - int(np.count_nonzero(ok))
            keys, scores, norms = keys[ok], scores[ok], norms[ok]
        m, n = len(scores), self.size
        if m == 0:
            return
        if m > 1 and not (scores[:-1] >= scores[1:]).all():  # actors send them sorted already
            order = np.argsort(-scores, kind="stable")
            keys, scores, norms = keys[order], scores[order], norms[order]
        keys = keys / norms[:, None]
        byte, bit = agent >> 3, np.uint8(1 << (agent & 7))
        if m > 1:  # two keys of the report within merge_rho of each other: the loop decides
            inner = keys @ keys.T
            np.fill_diagonal(inner, -1.0)
            if (inner >= self.merge_rho).any():
                self._add_in_order(keys, scores, byte, bit, clock)
                return
        any_hit = False
        if n:
            sims = keys @ self.keys[:n].T
            best = sims.argmax(axis=1)
            hit = sims.max(axis=1) >= self.merge_rho
            any_hit = bool(hit.any())
        new = np.flatnonzero(~hit) if any_hit else np.arange(m)  # in score order
        grow = min(len(new), self.capacity - n)
        slots = np.arange(n, n + grow)
        full = len(new) - grow
        taken = 0
        if full and n:
            # one by one, each key would evict the lowest entry left if it scores higher: the first `taken`
            # keys (scores falling) against the lowest entries (rising); keys inserted by this call never
            # score lower than a later key, so they are never the ones evicted
            low = self._lowest(min(full, n))
            taken = int(np.count_nonzero(scores[new[grow:grow + len(low)]] > self.scores[low]))
            if taken and any_hit:
                merging = np.zeros(n, bool)
                merging[best[hit]] = True
                if merging[low[:taken]].any():  # a later key merges into an entry an earlier one evicts
                    self._add_in_order(keys, scores, byte, bit, clock)
                    return
            slots = np.concatenate([slots, low[:taken]]) if grow else low[:taken]
        self.rejected += full - taken
        if any_hit:
            targets = best[hit]
            np.maximum.at(self.scores, targets, scores[hit])
            self.finders[targets, byte] |= bit
            self.last_update[targets] = clock
            self.merged += len(targets)
        if len(slots):
            put = new[:len(slots)]
            self.keys[slots], self.scores[slots] = keys[put], scores[put]
            self.finders[slots] = 0
            self.finders[slots, byte] = bit
            self.first_seen[slots] = self.last_update[slots] = clock
            self.size += grow
            self.inserted += len(slots)

    def _lowest(self, k: int) -> np.ndarray:
        """Positions of the k (>= 1) lowest-scored entries in the order one-by-one inserts would evict them
        (np.argmin each time): by score, ties by position."""
        s = self.scores[: self.size]
        if len(s) <= 1024:  # a full sort is cheaper than partitioning first
            return np.argsort(s, kind="stable")[:k]
        cand = np.flatnonzero(s <= np.partition(s, k - 1)[k - 1])
        return cand[np.argsort(s[cand], kind="stable")[:k]]

    def _add_in_order(self, keys: np.ndarray, scores: np.ndarray, byte: int, bit: np.uint8, clock: int) -> None:
        """The rule itself, one unit key at a time (already in score order), for reports whose keys interact."""
        for k, s in zip(keys, scores.tolist()):
            n = self.size
            if n:
                sims = self.keys[:n] @ k
                j = int(np.argmax(sims))
                if sims[j] >= self.merge_rho:
                    self.scores[j] = max(self.scores[j], s)
                    self.finders[j, byte] |= bit
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
            self.keys[j], self.scores[j] = k, s
            self.finders[j] = 0
            self.finders[j, byte] = bit
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

    def source_mask(self, sources: Iterable[int] | None) -> np.ndarray | None:
        """The packed finder row of `sources` (None: everybody), for `entries`; ids this buffer cannot hold
        are left out (no entry names them)."""
        if sources is None:
            return None
        return finder_mask((a for a in sources if 0 <= a < self.agents), self.agents)

    def entries(self, allowed: np.ndarray | None):
        """(keys[N,D] float32, scores[N] float32, finders[N,F] uint8), best first (ties by position).

        With `allowed` (a packed row from `source_mask`) only entries found by at least one allowed source
        are included, and their finder bits are restricted to the allowed sources: a receiver learns nothing
        about agents it is not linked to.
        """
        idx = np.argsort(-self.scores[: self.size], kind="stable")
        finders = self.finders[idx]
        if allowed is not None:
            finders &= allowed
            keep = finders.any(axis=1)
            idx, finders = idx[keep], finders[keep]
        return self.keys[idx], self.scores[idx].astype(np.float32), finders

    def entries_for(self, receiver: int, sources_allowed: Iterable[int] | None = None):
        """`entries` for one receiver whose topology neighbours are `sources_allowed`. `receiver` is part of
        the contract for future per-receiver rules; the topology already includes the receiver itself."""
        return self.entries(self.source_mask(sources_allowed))
