"""Fixtures of the explanation tests: one real gates training (20k steps, ~1 minute on 2 cores) shared by every
test module that explains a trained run, instead of one training per module."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import free_port_overrides

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def trained_gates_run(tmp_path_factory) -> Path:
    """The run directory of a finished 3-agent gates run (deploy/configs/gates.yaml, 20,000 steps per agent).
    MAGICMASK_TEST_GATES_RUN names an existing one to reuse when iterating on the tests."""
    given = os.environ.get("MAGICMASK_TEST_GATES_RUN")
    if given:
        return Path(given)
    run_dir = tmp_path_factory.mktemp("trained") / "gates"
    cmd = [sys.executable, "-m", "magicmask.cli", "run", "--config", str(ROOT / "deploy/configs/gates.yaml"),
           "--run-dir", str(run_dir)]
    for o in ["run.progress=false", "run.total_steps=20000", *free_port_overrides(metrics=True)]:
        cmd += ["--set", o]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=400,
                         env={**os.environ, "SDL_VIDEODRIVER": "dummy"})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return run_dir
