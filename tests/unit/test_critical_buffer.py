"""The shared buffer forgets: entries that nobody reports again expire, entries that are re-reported stay."""
import math

import numpy as np

from magicmask.broker.critical_buffer import CriticalBuffer
from magicmask.protocol import config as C
from magicmask.protocol.messages import finder_ids


def _key(i, dim=8):
    k = np.zeros(dim, np.float32)
    k[i] = 1.0
    return k[None]


def test_a_state_reported_once_and_never_again_leaves_the_buffer():
    buf = CriticalBuffer(capacity=16, key_dim=8, merge_rho=0.98, age_decay=0.98, min_score=0.5, agents=2)
    buf.add(_key(0), np.array([1.0]), agent=0, clock=0)
    expected = math.ceil(math.log(0.5) / math.log(0.98))  # snapshots until 0.98**n < 0.5: 35
    for snap in range(1, expected + 5):
        buf.add(_key(1), np.array([0.9]), agent=1, clock=snap * 50)  # a state that keeps being reported
        buf.age()
        ids = [int(np.argmax(k)) for k in buf.keys[: len(buf)]]
        if snap < expected - 1:
            assert 0 in ids, f"expired too early, after {snap} snapshots"
    ids = [int(np.argmax(k)) for k in buf.keys[: len(buf)]]
    assert ids == [1], "the state reported once must have left; the re-reported one must stay"
    assert buf.expired == 1 and len(buf) == 1
    keys, scores, finders = buf.entries_for(0)
    assert len(keys) == 1 and scores[0] >= 0.5 and finder_ids(finders[0]) == [1]


def test_without_a_floor_a_buffer_that_never_fills_keeps_everything():
    buf = CriticalBuffer(capacity=16, key_dim=8, merge_rho=0.98, age_decay=0.98, min_score=0.0, agents=1)
    buf.add(_key(0), np.array([1.0]), agent=0, clock=0)
    buf.age(500)
    assert len(buf) == 1 and buf.expired == 0


def test_expiry_keeps_the_survivors_data_aligned():
    buf = CriticalBuffer(capacity=8, key_dim=8, merge_rho=0.98, age_decay=0.5, min_score=0.3, agents=3)
    buf.add(np.concatenate([_key(i) for i in range(4)]), np.array([0.4, 1.0, 0.5, 0.9]), agent=2, clock=7)
    buf.age()   # scores 0.2, 0.5, 0.25, 0.45: keys 0 and 2 leave
    keys, scores, finders = buf.entries_for(0)
    assert [int(np.argmax(k)) for k in keys] == [1, 3]
    np.testing.assert_allclose(scores, [0.5, 0.45])
    assert [finder_ids(f) for f in finders] == [[2], [2]] and (buf.first_seen[: len(buf)] == 7).all()


def test_the_config_floor_reaches_the_buffer():
    cfg = C.load(overrides=["broker.min_score=0.25"], environ={})
    assert CriticalBuffer.from_config(cfg).min_score == 0.25
