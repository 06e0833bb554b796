"""Peer guidance is weighted by the broker entry's score: a confident, fresh entry guides as often as
actor.guidance_prob says, an aged or doubtful one less, and the agent's own entries never."""
import time
from types import SimpleNamespace

import numpy as np

from magicmask.actors.critical import Guidance
from magicmask.protocol import config as C
from magicmask.protocol.messages import finder_mask


def _snapshot(keys, scores, finders, seq=1, agents=4):
    """A snapshot as Links delivers it; `finders`: the agent ids of each entry."""
    arrays = {"keys": np.asarray(keys, np.float32), "scores": np.asarray(scores, np.float32),
              "finders": np.stack([finder_mask(ids, agents) for ids in finders])}
    return SimpleNamespace(incarnation=7, seq=seq, body={"created_at": time.time()}, arrays=arrays)


def test_guidance_follows_the_entrys_score():
    cfg = C.load(overrides=["actor.guidance_prob=0.8", "actor.key_dim=4", "run.agents=4"], environ={})
    g = Guidance(cfg, agent=0)
    eye = np.eye(4, dtype=np.float32)
    # entries 0..2 found by agent 1 with scores 1.0, 0.5, 0.1; entry 3 found only by agent 0 itself
    g.on_snapshot(_snapshot(eye, [1.0, 0.5, 0.1, 1.0], [[1], [1], [1], [0]]), stream=True)
    rng = np.random.default_rng(0)
    n = 20000
    share = [g.guide(np.repeat(eye[i:i + 1], n, 0), True, rng).mean() for i in range(4)]
    assert abs(share[0] - 0.8) < 0.02 and abs(share[1] - 0.4) < 0.02 and abs(share[2] - 0.08) < 0.01
    assert share[3] == 0.0   # its own finding: never guided by it
    g.on_snapshot(_snapshot(eye[:1], [1.0], [[1]], seq=2), stream=True)   # the others have left the buffer
    assert g.guide(eye[1:2], True, rng).sum() == 0


def test_own_finds_are_told_apart_among_many_agents():
    """Agent 200 of 256 (byte 25 of a 32-byte finder row): only entries some other agent found guide it."""
    cfg = C.load(overrides=["actor.guidance_prob=1.0", "actor.key_dim=4", "run.agents=256"], environ={})
    g = Guidance(cfg, agent=200)
    eye = np.eye(4, dtype=np.float32)
    g.on_snapshot(_snapshot(eye, [1.0] * 4, [[200], [200, 201], [7], [192, 255]], agents=256), stream=True)
    np.testing.assert_array_equal(g.keys, eye[1:])
    guided = g.guide(eye, True, np.random.default_rng(0))
    assert guided.tolist() == [False, True, True, True]
