"""Credit-based flow control between each actor and the learner (the ZeroMQ guide's credit-based flow
control), both sides in one place so the rules cannot drift apart.

The rules:
1. In flight. An actor may have at most `actor.max_inflight` fragments sent that the learner has not yet
   dealt with; at the limit it stops collecting until credit returns. So the learner's queue per agent
   holds at most max_inflight fragments, and a fast actor cannot run ahead of the slowest agent an update
   waits for. (The PUSH pipe's high-water mark stays the hard stop: a full pipe blocks, never drops.)
2. Credit returns with weights. Every Weights message to agent a carries {"incarnation": the actor
   incarnation the learner counts for, "fragments": how many of that incarnation's fragments it has dealt
   with}. The actor reads it from any Weights message addressed to it and carrying its own incarnation,
   even a repeated version, and keeps the largest count seen.
3. Dealt with = trained on or dropped as stale. An update counts `learner.fragments_per_batch` for every
   agent it trained. A fragment dropped for policy lag counts at once, and the learner re-sends that
   agent's weights (same version, no update): an actor waiting for a never-trained fragment would
   otherwise wait for ever (measured: two stale drops stalled an agent of a 3-agent run for good).
4. A new actor incarnation (a restarted actor, seen in a fragment's header) retires the old one: the
   learner counts the new one from zero, discards what the old one had queued, and drops any late fragment
   of the old one (cause "old_incarnation").
5. A new learner incarnation (a restarted learner, seen in any message's header): the actor counts from
   zero too (sent = returned = 0), since the new learner knows nothing of fragments sent before.
"""
from __future__ import annotations

import enum

import numpy as np


class ActorCredit:
    """The actor's side: fragments sent to the current learner, and how many it has dealt with."""

    def __init__(self, max_inflight: int, incarnation: int):
        self.max_inflight = max_inflight
        self.incarnation = incarnation  # this actor's: credit addressed to another incarnation is not ours
        self.sent = 0                   # fragments sent to the current learner incarnation
        self.returned = 0               # ... of which it has dealt with (rule 3)

    @property
    def in_flight(self) -> int:
        return self.sent - self.returned

    def can_send(self) -> bool:
        """Rule 1."""
        return self.in_flight < self.max_inflight

    def on_sent(self) -> None:
        self.sent += 1

    def on_weights(self, body: dict) -> None:
        """Rule 2: `body` is a Weights message's body already known to be addressed to this agent."""
        dealt = body.get("fragments")
        if body.get("incarnation") == self.incarnation and isinstance(dealt, int):
            self.returned = max(self.returned, dealt)

    def on_learner_restart(self) -> None:
        """Rule 5."""
        self.sent = self.returned = 0


class Admission(enum.Enum):
    """What the learner makes of a fragment's (agent, incarnation) (rule 4)."""
    SAME = "same"          # the incarnation it counts for
    FIRST = "first"        # the agent's first incarnation seen
    REPLACED = "replaced"  # a new incarnation: the old one is retired, its queued fragments void
    RETIRED = "retired"    # an incarnation already replaced: drop the fragment


class LearnerCredit:
    """The learner's side: per agent, the actor incarnation it counts for and the fragments dealt with."""

    def __init__(self, n_agents: int):
        self.incarnation: dict[int, int] = {}
        self.dealt = np.zeros(n_agents, np.int64)
        self.retired: set[tuple[int, int]] = set()

    def admit(self, agent: int, incarnation: int) -> Admission:
        """Rule 4."""
        if (agent, incarnation) in self.retired:
            return Admission.RETIRED
        old = self.incarnation.get(agent)
        if old == incarnation:
            return Admission.SAME
        if old is not None:
            self.retired.add((agent, old))
        self.incarnation[agent] = incarnation
        self.dealt[agent] = 0
        return Admission.FIRST if old is None else Admission.REPLACED

    def deal(self, agent: int, n: int = 1) -> None:
        """Rule 3: n of the agent's fragments were trained on or dropped as stale."""
        self.dealt[agent] += n

    def grant(self, agent: int) -> dict:
        """Rule 2: the credit fields of a Weights body to `agent`."""
        return {"incarnation": self.incarnation.get(agent, 0), "fragments": int(self.dealt[agent])}
