"""A run whose processes are started one by one (`magicmask broker|learner|actor`, as on several hosts or in
pods, no supervisor): when the learner finishes, the broker and the actors stop by themselves with exit status
0. Real processes on loopback."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import PATIENCE, free_port_overrides

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(600)


def test_broker_and_actors_stop_by_themselves_when_the_learner_finishes(tmp_path):
    run_dir = tmp_path / "run"
    sets = [*free_port_overrides(), "run.agents=2", "run.total_steps=1024", "env.eval_every=0"]
    common = ["--config", "gates", "--run-dir", str(run_dir), *[x for s in sets for x in ("--set", s)]]
    roles = {"broker": ["broker"], "learner": ["learner"], "actor0": ["actor", "--agent", "0"],
             "actor1": ["actor", "--agent", "1"]}
    run_dir.mkdir()
    procs = {}

    def logs() -> str:
        return "\n".join(f"--- {n}\n{(run_dir / f'{n}.log').read_text()[-2000:]}" for n in procs)
    try:
        for name, args in roles.items():
            with open(run_dir / f"{name}.log", "wb") as log:
                procs[name] = subprocess.Popen([sys.executable, "-m", "magicmask.cli", *args, *common], cwd=ROOT,
                                               stdout=log, stderr=subprocess.STDOUT,
                                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert procs["learner"].wait(3 * PATIENCE) == 0, logs()
        for name in ("broker", "actor0", "actor1"):   # nobody tells them but the learner
            try:
                procs[name].wait(PATIENCE)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{name} still running {PATIENCE:.0f} s after the learner finished\n{logs()}")
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    assert {n: p.returncode for n, p in procs.items()} == dict.fromkeys(roles, 0), logs()
    assert "the learner ended the run: every agent reached run.total_steps=1024" in (run_dir / "broker.log").read_text()
