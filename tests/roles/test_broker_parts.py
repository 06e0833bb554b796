"""The broker's parts as units, no sockets: the top-K critical-state buffer, the topologies, the seeded
link impairment model (the process itself: test_broker.py)."""
import math

import numpy as np
import pytest

from magicmask.broker.critical_buffer import CriticalBuffer
from magicmask.broker.impairment import Impairment
from magicmask.broker.server import pack_round, source_groups
from magicmask.broker.topology import neighbours
from magicmask.protocol import config as C
from magicmask.protocol import messages as M
from magicmask.protocol.codec import Sender, decode
from magicmask.protocol.messages import finder_ids

D = 32


def unit_keys(n, d=D, seed=0):
    """n nearly orthogonal unit keys (random Gaussian directions: cosine ~ +-0.3 in 32 dims)."""
    k = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return k / np.linalg.norm(k, axis=1, keepdims=True)


def ids(finders):
    return [finder_ids(f) for f in finders]


# ---------------------------------------------------------------- buffer
def test_buffer_top_k_order_and_capacity():
    b = CriticalBuffer(capacity=4, key_dim=D, merge_rho=0.98, age_decay=1.0, agents=3)
    scores = np.array([0.3, 0.9, 0.1, 0.5, 0.7, 0.2, 0.8, 0.4, 0.6, 0.05], np.float32)
    keys = unit_keys(10)
    b.add(keys[:5], scores[:5], agent=0, clock=10)
    b.add(keys[5:], scores[5:], agent=1, clock=20)
    k, s, f = b.entries_for(0, None)
    assert len(b) == 4 and k.shape == (4, D) and k.dtype == np.float32 and f.dtype == np.uint8
    np.testing.assert_allclose(s, [0.9, 0.8, 0.7, 0.6])
    # keys came along with their scores, and finder bits say who found them
    np.testing.assert_allclose(k, keys[[1, 6, 4, 8]], atol=1e-6)
    assert ids(f) == [[0], [1], [0], [1]]
    # a score no higher than the weakest entry does not get in
    b.add(unit_keys(1, seed=5), [0.6], agent=2, clock=30)
    assert b.entries_for(0, None)[1].tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6])


def test_buffer_merges_near_duplicates():
    b = CriticalBuffer(capacity=8, key_dim=D, merge_rho=0.98, age_decay=1.0, agents=4)
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
    assert ids(f) == [[0, 1, 2], [3]]
    np.testing.assert_allclose(keys[0], k[0], atol=1e-6)  # the entry's key stays the first one found
    assert b.first_seen[0] == 1 and b.last_update[0] == 3
    assert b.merged == 3 and b.inserted == 2


def test_buffer_ageing_lets_fresh_entries_in():
    b = CriticalBuffer(capacity=3, key_dim=D, merge_rho=0.98, age_decay=0.5, agents=2)
    keys = unit_keys(6)
    b.add(keys[:3], [0.9, 0.9, 0.9], agent=0, clock=0)
    b.add(keys[3:4], [0.5], agent=1, clock=50)
    assert [1] not in ids(b.entries_for(0, None)[2])  # without ageing the fresh state cannot enter
    b.age(3)                                            # 0.9 -> 0.1125
    b.add(keys[3:], [0.5, 0.5, 0.5], agent=1, clock=200)
    k, s, f = b.entries_for(0, None)
    assert s.tolist() == pytest.approx([0.5] * 3) and ids(f) == [[1], [1], [1]]
    np.testing.assert_allclose(k, keys[3:], atol=1e-6)


def test_buffer_topology_filter():
    b = CriticalBuffer(capacity=8, key_dim=D, merge_rho=0.98, age_decay=1.0, agents=4)
    keys = unit_keys(4)
    for a in range(4):
        b.add(keys[a:a + 1], [0.1 * (a + 1)], agent=a, clock=a)
    b.add(keys[3:4], [0.1], agent=1, clock=9)  # found by 1 and 3
    _, s, f = b.entries_for(0, {0, 1})
    assert s.tolist() == pytest.approx([0.4, 0.2, 0.1]) and ids(f) == [[1], [1], [0]]  # agent 3 hidden
    assert len(b.entries_for(0, set())[1]) == 0


def one_by_one(b, keys, scores, agent, clock):
    """The buffer's rule as it was written before `add` was batched: one key at a time, highest score first."""
    keys = np.asarray(keys, np.float32).reshape(-1, b.key_dim)
    scores = np.asarray(scores, np.float64).reshape(-1)
    norms = np.linalg.norm(keys, axis=1)
    ok = (norms > 1e-12) & np.isfinite(norms) & np.isfinite(scores)
    b.rejected += int((~ok).sum())
    keys, scores = keys[ok] / norms[ok, None], scores[ok]
    for i in np.argsort(-scores, kind="stable"):
        k, s, n = keys[i], float(scores[i]), b.size
        if n:
            sims = b.keys[:n] @ k
            j = int(np.argmax(sims))
            if sims[j] >= b.merge_rho:
                b.scores[j] = max(b.scores[j], s)
                b.finders[j, agent // 8] |= 1 << (agent % 8)
                b.last_update[j] = clock
                b.merged += 1
                continue
        if n < b.capacity:
            j, b.size = n, n + 1
        else:
            j = int(np.argmin(b.scores[:n]))
            if s <= b.scores[j]:
                b.rejected += 1
                continue
        b.keys[j], b.scores[j], b.finders[j] = k, s, 0
        b.finders[j, agent // 8] = 1 << (agent % 8)
        b.first_seen[j] = b.last_update[j] = clock
        b.inserted += 1


def test_batched_add_gives_what_one_key_at_a_time_gives():
    """Reports drawn so that every case occurs: merges (a pool of recurring states), intra-report duplicates,
    a full buffer that evicts, a key merging into an entry an earlier key of its report evicts, equal scores,
    invalid keys, agents in several bytes of the finder rows. Both paths of `add` must be taken."""
    rng = np.random.default_rng(3)
    pool = unit_keys(40, seed=4)
    fast = CriticalBuffer(capacity=12, key_dim=D, merge_rho=0.98, age_decay=0.8, min_score=0.5, agents=300)
    ref = CriticalBuffer(capacity=12, key_dim=D, merge_rho=0.98, age_decay=0.8, min_score=0.5, agents=300)
    loops = []
    fast._add_in_order = lambda *a, f=fast._add_in_order: loops.append(1) or f(*a)
    for step in range(3000):
        m = int(rng.integers(0, 9))
        keys = pool[rng.integers(0, len(pool), m)] + 0.02 * rng.normal(size=(m, D)).astype(np.float32)
        fresh = rng.random(m) < 0.4
        keys[fresh] = unit_keys(int(fresh.sum()), seed=10_000 + step)  # states never seen before
        scores = np.round(rng.uniform(0.0, 1.0, m), 1)                  # ties
        if m and rng.random() < 0.05:
            keys[0] = 0.0                                                # refused
        agent = int(rng.integers(0, 300))
        fast.add(keys, scores, agent, step)
        one_by_one(ref, keys, scores, agent, step)
        if step % 7 == 0:  # now and then a quiet spell: several snapshots' ageing at once
            times = 3 if step % 49 == 0 else 1
            fast.age(times)
            ref.age(times)
        n = len(ref)
        assert len(fast) == n, step
        np.testing.assert_allclose(fast.keys[:n], ref.keys[:n], atol=1e-6, err_msg=str(step))
        for name in ("scores", "finders", "first_seen", "last_update"):
            np.testing.assert_array_equal(getattr(fast, name)[:n], getattr(ref, name)[:n], err_msg=f"{name} {step}")
        assert (fast.merged, fast.inserted, fast.rejected, fast.expired) == (
            ref.merged, ref.inserted, ref.rejected, ref.expired), step
    assert 100 < len(loops) < 2000, len(loops)  # both paths ran often
    assert fast.merged > 1000 and fast.inserted > 1000 and fast.rejected > 1000 and fast.expired > 100


def test_a_large_buffer_evicts_in_the_order_one_by_one_inserts_would():
    """Past 1,024 entries the lowest are found by partitioning first; ties still go by position."""
    b = CriticalBuffer(capacity=5000, key_dim=D, merge_rho=0.98, age_decay=1.0, agents=1)
    s = np.round(np.random.default_rng(1).uniform(0, 1, 5000), 2)  # many ties
    b.scores[:], b.size = s, 5000
    for k in (1, 7, 300):
        np.testing.assert_array_equal(b._lowest(k), np.argsort(s, kind="stable")[:k])


def test_buffer_holds_any_number_of_agents():
    b = CriticalBuffer(capacity=8, key_dim=D, merge_rho=0.98, age_decay=1.0, agents=1024)
    keys = unit_keys(3)
    b.add(keys[:1], [0.9], agent=200, clock=1)
    b.add(keys[:1], [0.5], agent=1023, clock=2)
    b.add(keys[1:3], [0.8, 0.7], agent=63, clock=3)
    k, s, f = b.entries_for(0, None)
    assert f.shape == (3, 128) and ids(f) == [[200, 1023], [63], [63]]
    _, s, f = b.entries_for(5, {5, 200, 4096})  # an id the run does not have selects nothing
    assert s.tolist() == pytest.approx([0.9]) and ids(f) == [[200]]
    with pytest.raises(ValueError, match="0..1023"):
        b.add(keys[:1], [0.9], agent=1024, clock=4)


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


def test_a_round_filters_the_buffer_once_per_source_set():
    n = 300
    b = CriticalBuffer(capacity=8, key_dim=D, merge_rho=0.98, age_decay=1.0, agents=n)
    keys = unit_keys(3)
    for key, score, agent in zip(keys, (0.9, 0.8, 0.7), (200, 5, 299)):
        b.add(key, [score], agent=agent, clock=1)
    full = source_groups(b, neighbours(comm(), n))
    assert len(full) == 1 and full[0][1] == list(range(n))
    out = pack_round({r: Sender(-1, 7) for r in range(n)}, b, source_groups(b, neighbours(comm(topology="ring"), n)), 50)
    assert [r for r, _ in out] == list(range(n)) and all(frames[0] == M.snapshot_topic(r) for r, frames in out)
    snaps = {r: M.validate(decode(frames[1:], 2**26), {"K": D, "F": 38}, (M.SNAPSHOT,)) for r, frames in out}
    assert {m.seq for m in snaps.values()} == {1} and snaps[7].body["receiver"] == 7
    assert ids(snaps[200].arrays["finders"]) == [[200]] and ids(snaps[201].arrays["finders"]) == [[200]]
    assert ids(snaps[0].arrays["finders"]) == [[299]] and ids(snaps[5].arrays["finders"]) == [[5]]
    assert ids(snaps[4].arrays["finders"]) == [[5]] and snaps[100].arrays["finders"].shape == (0, 38)
    np.testing.assert_allclose(snaps[0].arrays["keys"], keys[2:], atol=1e-6)


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
