"""Peer guidance is weighted by the broker entry's score: a confident, fresh entry guides as often as
actor.guidance_prob says, an aged or doubtful one less, and the agent's own entries never."""
import time
from types import SimpleNamespace

import numpy as np

from magicmask.actors.critical import Guidance
from magicmask.protocol import config as C


def _snapshot(keys, scores, finders, seq=1):
    arrays = {"keys": np.asarray(keys, np.float32), "scores": np.asarray(scores, np.float32),
              "finders": np.asarray(finders, np.int64)}
    return SimpleNamespace(incarnation=7, seq=seq, body={"created_at": time.time()}, arrays=arrays)


def test_guidance_follows_the_entrys_score():
    cfg = C.load(overrides=["actor.guidance_prob=0.8", "actor.key_dim=4"], environ={})
    g = Guidance(cfg, agent=0)
    eye = np.eye(4, dtype=np.float32)
    # entries 0..2 found by agent 1 with scores 1.0, 0.5, 0.1; entry 3 found only by agent 0 itself
    g.on_snapshot(_snapshot(eye, [1.0, 0.5, 0.1, 1.0], [2, 2, 2, 1]), stream=True)
    rng = np.random.default_rng(0)
    n = 20000
    share = [g.guide(np.repeat(eye[i:i + 1], n, 0), True, rng).mean() for i in range(4)]
    assert abs(share[0] - 0.8) < 0.02 and abs(share[1] - 0.4) < 0.02 and abs(share[2] - 0.08) < 0.01
    assert share[3] == 0.0   # its own finding: never guided by it
    g.on_snapshot(_snapshot(eye[:1], [1.0], [2], seq=2), stream=True)   # the others have left the buffer
    assert g.guide(eye[1:2], True, rng).sum() == 0
