"""The broker's parts as units, no sockets: the top-K critical-state buffer, the topologies, the seeded
link impairment model (the process itself: test_broker.py)."""
import math

import numpy as np
import pytest

from magicmask.broker.critical_buffer import CriticalBuffer
from magicmask.broker.impairment import Impairment
from magicmask.broker.topology import neighbours
from magicmask.protocol import config as C

D = 32


def unit_keys(n, d=D, seed=0):
    """n nearly orthogonal unit keys (random Gaussian directions: cosine ~ +-0.3 in 32 dims)."""
    k = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return k / np.linalg.norm(k, axis=1, keepdims=True)


# ---------------------------------------------------------------- buffer
def test_buffer_top_k_order_and_capacity():
    b = CriticalBuffer(capacity=4, key_dim=D, merge_rho=0.98, age_decay=1.0)
    scores = np.array([0.3, 0.9, 0.1, 0.5, 0.7, 0.2, 0.8, 0.4, 0.6, 0.05], np.float32)
    keys = unit_keys(10)
    b.add(keys[:5], scores[:5], agent=0, clock=10)
    b.add(keys[5:], scores[5:], agent=1, clock=20)
    k, s, f = b.entries_for(0, None)
    assert len(b) == 4 and k.shape == (4, D) and k.dtype == np.float32 and f.dtype == np.int64
    np.testing.assert_allclose(s, [0.9, 0.8, 0.7, 0.6])
    # keys came along with their scores, and finder bits say who found them
    np.testing.assert_allclose(k, keys[[1, 6, 4, 8]], atol=1e-6)
    assert f.tolist() == [1, 2, 1, 2]
    # a score no higher than the weakest entry does not get in
    b.add(unit_keys(1, seed=5), [0.6], agent=2, clock=30)
    assert b.entries_for(0, None)[1].tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6])


def test_buffer_merges_near_duplicates():
    b = CriticalBuffer(capacity=8, key_dim=D, merge_rho=0.98, age_decay=1.0)
    k = unit_keys(2)
    near = k[0] + 0.05 * unit_keys(1, seed=9)[0]  # cosine ~ 0.999 with k[0]
    assert float(near @ k[0] / np.linalg.norm(near)) > 0.98
    b.add(k[:1], [0.5], agent=0, clock=1)
    b.add(near[None] * 3.0, [0.9], agent=2, clock=2)     # unnormalised on purpose
    b.add(k[:1], [0.3], agent=1, clock=3)                # lower score: kept 0.9
    b.add(np.stack([k[1], k[1]]), [0.4, 0.6], agent=3, clock=4)  # duplicates inside one report
    keys, s, f = b.entries_for(0, None)
    assert len(b) == 2
    assert s.tolist() == pytest.approx([0.9, 0.6])
    assert f.tolist() == [0b0111, 0b1000]
    np.testing.assert_allclose(keys[0], k[0], atol=1e-6)  # the entry's key stays the first one found
    assert b.first_seen[0] == 1 and b.last_update[0] == 3
    assert b.merged == 3 and b.inserted == 2


def test_buffer_ageing_lets_fresh_entries_in():
    b = CriticalBuffer(capacity=3, key_dim=D, merge_rho=0.98, age_decay=0.5)
    keys = unit_keys(6)
    b.add(keys[:3], [0.9, 0.9, 0.9], agent=0, clock=0)
    b.add(keys[3:4], [0.5], agent=1, clock=50)
    assert 2 not in b.entries_for(0, None)[2].tolist()  # without ageing the fresh state cannot enter
    b.age(3)                                            # 0.9 -> 0.1125
    b.add(keys[3:], [0.5, 0.5, 0.5], agent=1, clock=200)
    k, s, f = b.entries_for(0, None)
    assert s.tolist() == pytest.approx([0.5] * 3) and f.tolist() == [2, 2, 2]
    np.testing.assert_allclose(k, keys[3:], atol=1e-6)


def test_buffer_topology_filter():
    b = CriticalBuffer(capacity=8, key_dim=D, merge_rho=0.98, age_decay=1.0)
    keys = unit_keys(4)
    for a in range(4):
        b.add(keys[a:a + 1], [0.1 * (a + 1)], agent=a, clock=a)
    b.add(keys[3:4], [0.1], agent=1, clock=9)  # found by 1 and 3
    _, s, f = b.entries_for(0, {0, 1})
    assert s.tolist() == pytest.approx([0.4, 0.2, 0.1]) and f.tolist() == [0b10, 0b10, 0b01]  # bit 3 hidden
    assert len(b.entries_for(0, set())[1]) == 0


# ---------------------------------------------------------------- topology
def comm(**kw):
    c = C.CommConfig()
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def test_topologies():
    assert neighbours(comm(), 3) == {0: {0, 1, 2}, 1: {0, 1, 2}, 2: {0, 1, 2}}
    assert neighbours(comm(topology="ring"), 5)[0] == {4, 0, 1}
    assert neighbours(comm(topology="ring"), 5)[3] == {2, 3, 4}
    star = neighbours(comm(topology="star"), 4)
    assert star[0] == {0, 1, 2, 3} and star[2] == {0, 2}
    rk = neighbours(comm(topology="random-k", random_k=2, seed=7), 6)
    assert all(r in s and len(s) == 3 for r, s in rk.items())
    assert rk == neighbours(comm(topology="random-k", random_k=2, seed=7), 6)  # seeded
    assert neighbours(comm(topology="random-k", random_k=5), 3)[1] == {0, 1, 2}  # k capped at n-1
    ex = neighbours(comm(topology="explicit", adjacency={"1": [0], 2: ["3", 1]}), 4)
    assert ex == {0: {0}, 1: {0, 1}, 2: {1, 2, 3}, 3: {3}}


# ---------------------------------------------------------------- impairment (no sockets)
def test_impairment_off_by_default():
    imp = Impairment(C.CommConfig())
    assert all(imp.submit((-1, 0), i, 100, now=5.0) for i in range(50))
    assert imp.next_due() == 5.0
    assert [p for _, p in imp.due(5.0)] == list(range(50))
    assert imp.next_due() is None and imp.due(6.0) == []
    c = imp.counters[(-1, 0)]
    assert c["sent"] == 50 and c["dropped"] == c["delayed"] == c["reordered"] == c["overflow"] == 0
    assert c["bytes"] == 5000


def test_impairment_iid_loss_rate_and_seed():
    def run(seed):
        imp = Impairment(comm(loss=0.3, seed=seed))
        return [imp.submit((-1, 1), i, 10, now=0.0) for i in range(5000)]
    a = run(1)
    lost = 5000 - sum(a)
    assert abs(lost - 1500) < 4 * math.sqrt(5000 * 0.3 * 0.7)
    assert a == run(1) and a != run(2)


def test_impairment_bursty_loss_has_mean_burst_len():
    n = 40_000
    imp = Impairment(comm(loss=0.2, loss_model="bursty", burst_len=4.0, seed=3))
    ok = np.array([imp.submit((-1, 0), None, 1, now=0.0) for _ in range(n)])
    lost = ~ok
    assert abs(lost.mean() - 0.2) < 0.03
    edges = np.diff(np.concatenate([[0], lost.astype(int), [0]]))
    bursts = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    assert abs(bursts.mean() - 4.0) < 0.4, bursts.mean()
    # iid loss at the same rate has bursts of about 1 / (1 - p) = 1.25
    imp = Impairment(comm(loss=0.2, seed=3))
    lost = ~np.array([imp.submit((-1, 0), None, 1, now=0.0) for _ in range(n)])
    edges = np.diff(np.concatenate([[0], lost.astype(int), [0]]))
    assert (np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).mean() < 1.4


def test_impairment_bandwidth_cap_queues_messages():
    imp = Impairment(comm(bandwidth_bps=100_000))
    imp.submit((-1, 0), "a", 10_000, now=0.0)   # occupies the link for 0.1 s
    imp.submit((-1, 0), "b", 10_000, now=0.0)   # waits behind it: 0.2 s
    imp.submit((-1, 1), "c", 1_000, now=0.0)    # another link is not slowed: 0.01 s
    assert imp.next_due() == pytest.approx(0.01)
    assert imp.due(0.0099) == [] and imp.due(0.0101) == [((-1, 1), "c")]
    assert imp.due(0.0999) == [] and imp.due(0.1001) == [((-1, 0), "a")]
    assert imp.due(0.1999) == [] and imp.due(0.2001) == [((-1, 0), "b")]
    imp.submit((-1, 0), "d", 1_000, now=5.0)    # an idle link sends at once
    assert imp.next_due() == pytest.approx(5.01)
    assert imp.counters[(-1, 0)]["delayed"] == 3


def test_impairment_latency_jitter_reorder_and_overflow():
    imp = Impairment(comm(latency_ms=50, jitter_ms=10, reorder=0.2, reorder_ms=30, seed=1))
    for i in range(400):
        imp.submit((-1, 0), i, 10, now=i * 0.001)
    out, t = [], 0.0
    while imp.next_due() is not None:
        t = imp.next_due()
        released = imp.due(t)
        out += [(t, p) for _, p in released]
    delays = np.array([t - p * 0.001 for t, p in out])
    assert delays.min() >= 0.05 - 1e-9 and delays.max() <= 0.09 + 1e-9
    c = imp.counters[(-1, 0)]
    assert abs(c["reordered"] - 80) < 4 * math.sqrt(400 * 0.2 * 0.8) and c["delayed"] == 400
    order = [p for _, p in out]
    assert order != sorted(order) and sorted(order) == list(range(400))  # later ones overtook
    # bounded queue: the oldest waiting message leaves first
    imp = Impairment(comm(latency_ms=1000), max_pending=10)
    for i in range(25):
        imp.submit((-1, 2), i, 1, now=0.0)
    assert imp.pending((-1, 2)) == 10 and imp.counters[(-1, 2)]["overflow"] == 15
    assert [p for _, p in imp.due(2.0)] == list(range(15, 25))
