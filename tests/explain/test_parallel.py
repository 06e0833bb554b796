"""explain/parallel.py: per-agent work in forked workers, and when forking is not safe or a worker dies. The
fork cases run in a freshly spawned interpreter: this test process may hold threads of earlier tests."""
import multiprocessing
import os
import threading

from magicmask.explain import parallel as P


def _square_plus(a):
    return a * a + P.job()["plus"], os.getpid()


def _dies_in_a_worker(a):
    if os.getpid() != P.job()["parent"] and a == 1:
        os._exit(3)   # a worker killed mid-task (as by the OOM killer)
    return a


def _in_a_clean_process():
    me = os.getpid()
    out = P.map_agents(_square_plus, [3, 1, 2], 2, plus=1)
    forked = [v for v, _ in out] == [10, 2, 5] and bool({pid for _, pid in out} - {me}) and P.job() == {}
    survived = P.map_agents(_dies_in_a_worker, [0, 1, 2], 2, parent=me) == [0, 1, 2]
    after = {pid for _, pid in P.map_agents(_square_plus, [1, 2], 2, plus=0)}
    return forked, survived, bool(P._BROKEN), after == {me}


def _report(queue):
    queue.put(_in_a_clean_process())


def test_forked_workers_and_a_dead_one():
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_report, args=(queue,))   # not a pool's worker: those may not have children
    proc.start()
    forked, survived, broken, serial_after = queue.get(timeout=120)
    proc.join(30)
    assert forked, "the agents did not run in worker processes, in order"
    assert survived and broken, "a dead worker was not survived by doing the work here"
    assert serial_after, "after a dead worker the process kept forking"


def test_no_fork_while_other_threads_run():
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        out = P.map_agents(_square_plus, [1, 2], 2, plus=0)
    finally:
        stop.set()
        t.join()
    assert [v for v, _ in out] == [1, 4] and {pid for _, pid in out} == {os.getpid()}
