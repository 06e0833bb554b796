"""`magicmask sweep` (app/sweep.py): the training commands it would start, run from a directory other than the
repository (a relative config, a preset name), its up-front check of every cell's config, and its tables."""
import shlex
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

from magicmask.compare import aggregate
from magicmask.config_file import resolve_config
from magicmask.protocol import config as C
import pytest

from magicmask.sweep import run_dir, run_sweep, sweep_markdown


def magicmask(cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    """The installed command, started in `cwd` (outside the repository)."""
    return subprocess.run([sys.executable, "-m", "magicmask.cli", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def planned(stdout: str) -> list[list[str]]:
    """The training commands a dry run printed, as argument lists."""
    return [shlex.split(line) for line in stdout.splitlines() if "magicmask.cli run" in line]


def option(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_dry_run_from_another_directory_with_a_relative_config_and_a_preset(tmp_path):
    tmp_path = tmp_path.resolve()
    (tmp_path / "cfgs").mkdir()
    (tmp_path / "cfgs" / "mine.yaml").write_text(resolve_config("gates").read_text())
    preset = Path(str(files("magicmask.presets") / "gates.yaml")).resolve()
    for config, expected in (("cfgs/mine.yaml", tmp_path / "cfgs" / "mine.yaml"), ("gates", preset)):
        res = magicmask(tmp_path, "sweep", "--config", config, "--seeds", "0,1", "--grid", "mask.tau=0.3,0.5",
                        "--out", "sw", "--dry-run")
        assert res.returncode == 0, res.stderr
        cmds = planned(res.stdout)
        assert len(cmds) == 4
        assert {option(c, "--config") for c in cmds} == {str(expected)}
        assert {option(c, "--run-dir") for c in cmds} == {
            str(tmp_path / "sw" / "runs" / f"mask.tau={tau}" / f"seed{s}") for tau in ("0.3", "0.5") for s in (0, 1)}
        for c in cmds:   # every socket and the metrics on their own free ports, as the config's names say
            sets = dict(C.parse_override(c[i + 1]) for i, a in enumerate(c) if a == "--set")
            ports = [sets[f"net.{name}"] for name in (*C.PORT_FIELDS, "metrics_port")]
            assert len(set(ports)) == len(ports) and all(p > 1024 for p in ports)
    assert not (tmp_path / "sw").exists()   # a dry run makes nothing


def test_unknown_config_and_bad_grid_value_fail_before_anything_runs(tmp_path):
    res = magicmask(tmp_path, "sweep", "--config", "nope", "--out", "sw", "--dry-run")
    assert res.returncode == 2
    assert "'nope'" in res.stderr and "gates" in res.stderr and "connect4" in res.stderr   # the presets named
    res = magicmask(tmp_path, "sweep", "--config", "gates", "--grid", "mask.tau=0.3,-1", "--out", "sw", "--dry-run")
    assert res.returncode == 2 and "mask.tau" in res.stderr and "-1" in res.stderr
    assert "magicmask.cli run" not in res.stdout and not (tmp_path / "sw").exists()


def test_reuse_refuses_a_kept_run_of_another_design(tmp_path):
    """--reuse takes a kept run only if it was trained with the config the sweep would train now: here a run
    kept with comm.seed 5 (a fixed-seed design) is not reused by a sweep that sets comm.seed to the run's seed."""
    config = resolve_config("gates")
    rd = run_dir(tmp_path, [], 0)
    (rd / "checkpoints").mkdir(parents=True)
    (rd / "checkpoints" / "latest").write_text("v1")
    kept = ["run.seed=0", "explain.seed=0", "comm.seed=5", "net.metrics_port=12345", "run.progress=false"]
    C.save(C.load(config, kept), rd / "config.yaml")
    commands = []
    with pytest.raises(ValueError, match=r"seed0: comm.seed: the run has 5, this sweep sets 0"):
        run_sweep("gates", [0], [], tmp_path, reuse=True, dry_run=True, log=commands.append, seed_fields=("comm.seed",))
    assert commands == []   # refused before anything would run
    run_sweep("gates", [0], [], tmp_path, ["comm.seed=5"], reuse=True, dry_run=True, log=commands.append)
    assert len(commands) == 1   # the same design: accepted (ports and progress may differ)


def test_sweep_tables_from_metrics():
    rows = []
    for cell, vals in (("mask.tau=0.3", [0.9, 0.7]), ("mask.tau=0.5", [1.0, 1.0])):
        agg = aggregate([("gates", {"magicmask": {"precision_at_k": v, "kl_divergence": None}}) for v in vals])
        rows += [{"cell": cell, **r} for r in agg]
    md = sweep_markdown(rows, ["mask.tau=0.3", "mask.tau=0.5"], "t")
    assert "| precision_at_k | 0.8 ± 0.14 | 1 ± 0 |" in md
    assert "| kl_divergence | – | – |" in md
