"""`magicmask strength`: a finished Connect Four run's agents against the built-in players, with intervals; a
team world's (highway's) trained team against its untrained networks on the same seeds."""
import json

import numpy as np
import pytest
import torch

from magicmask import strength
from magicmask.actors.envs import env_spec
from magicmask.actors.envs.connect4 import builtin_player
from magicmask.cli import main
from magicmask.explain import episodes
from magicmask.learner import checkpoint
from magicmask.learner.server import Learner
from magicmask.protocol import config as C


@pytest.fixture()
def untrained_connect4_run(tmp_path):
    """A connect4 run directory as training leaves it: config.yaml and a checkpoint (untrained weights)."""
    cfg = C.load(overrides=["env.name=connect4", "run.agents=2", "net.metrics_port=0", "ppo.hidden=16"], environ={})
    C.save(cfg, tmp_path / "config.yaml")
    learner = Learner(cfg, env_spec(cfg), tmp_path)
    learner.version = 3
    checkpoint.save(learner.state(), tmp_path / "checkpoints", 3)
    return tmp_path


def test_wilson_interval():
    assert strength.wilson(0, 0) == [0.0, 1.0]
    lo, hi = strength.wilson(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    lo, hi = strength.wilson(0, 40)
    assert lo == 0.0 and 0.08 < hi < 0.09   # stays inside [0, 1] where p +- 1.96 sd would not


def test_strength_tells_a_strong_player_from_a_weak_one(untrained_connect4_run, monkeypatch, capsys):
    """Agent 1 plays as the depth-2 alpha-beta player, agent 0 is the untrained network: against the random
    player agent 1 wins nearly every game and agent 0 about half, and each interval holds its share."""
    real = episodes.load_run

    def with_a_searcher(run_dir, ckpt=None):
        run = real(run_dir, ckpt)
        search, rng = builtin_player("search:2"), np.random.default_rng(0)
        run.policies[1].greedy = lambda obs, legal: search(obs, legal, rng)
        return run
    monkeypatch.setattr(episodes, "load_run", with_a_searcher)
    assert main(["strength", str(untrained_connect4_run), "--opponents", "random,lookahead", "--games", "40"]) == 0
    out = json.loads((untrained_connect4_run / "strength.json").read_text())
    assert out["version"] == 3 and out["games"] == 40
    weak, strong = out["opponents"]["random"]["agents"]
    assert strong["win"] >= 0.9 and 0.2 <= weak["win"] <= 0.8
    for row in (weak, strong, out["opponents"]["random"]["pooled"]):
        assert row["win_ci"][0] <= row["win"] <= row["win_ci"][1]
        assert row["win"] + row["loss"] + row["draw"] == pytest.approx(1.0)
    assert out["opponents"]["lookahead"]["agents"][0]["win"] < strong["win"]
    for row in out["opponents"]["lookahead"]["agents"]:   # every lost game has its reason
        assert sum(row["losses"].values()) == round(row["loss"] * 40)
    printed = capsys.readouterr().out
    assert "| random |" in printed and "- lookahead: " in printed


def test_strength_names_what_it_cannot_do(untrained_connect4_run, tmp_path, capsys):
    assert main(["strength", str(untrained_connect4_run), "--opponents", "lookahead,minimax"]) == 2
    assert "no built-in player 'minimax'" in capsys.readouterr().err
    gates = tmp_path / "gates"
    cfg = C.load(overrides=["env.name=gates", "run.agents=1", "net.metrics_port=0"], environ={})
    gates.mkdir()
    C.save(cfg, gates / "config.yaml")
    checkpoint.save(Learner(cfg, env_spec(cfg), gates).state(), gates / "checkpoints", 1)
    assert main(["strength", str(gates)]) == 2
    assert "env 'gates' has no built-in players" in capsys.readouterr().err


def test_team_strength_against_the_untrained_networks(tmp_path, capsys):
    """Highway with 2 agents: a checkpoint holding the learner's initial weights plays exactly like the
    untrained side (every paired difference 0: `untrained` rebuilds the learner's version 0 from run.seed);
    a checkpoint with other weights (all zero: every vehicle keeps changing lanes left) plays differently on
    the same seeds, and every figure has its interval."""
    pytest.importorskip("highway_env", reason="highway-env is not installed: deploy/test.sh installs it")
    cfg = C.load("deploy/configs/highway.yaml", ["run.agents=2", "env.max_episode_steps=15", "net.metrics_port=0",
                                                 "run.seed=5"], environ={})
    C.save(cfg, tmp_path / "config.yaml")
    state = Learner(cfg, env_spec(cfg), tmp_path).state()
    checkpoint.save({**state, "version": 7}, tmp_path / "checkpoints", 7)
    assert main(["strength", str(tmp_path), "--games", "6", "--seed", "100"]) == 0
    out = json.loads((tmp_path / "strength.json").read_text())
    team = out["team"]
    assert out["version"] == 7 and out["games"] == 6 and set(team["trained"]) == {"return", "crashed"}
    assert team["trained"] == team["untrained"]
    for diff in team["trained_minus_untrained"].values():
        assert diff["mean"] == 0.0 and diff["ci"] == [0.0, 0.0]
    assert "| crashed |" in capsys.readouterr().out

    zero = {k: torch.zeros_like(v) for k, v in state["nets"].items()}
    checkpoint.save({**state, "nets": zero, "version": 8}, tmp_path / "checkpoints", 8)
    assert main(["strength", str(tmp_path), "--games", "6", "--seed", "100"]) == 0
    team = json.loads((tmp_path / "strength.json").read_text())["team"]
    assert team["trained"]["return"]["mean"] != team["untrained"]["return"]["mean"]
    diff = team["trained_minus_untrained"]["return"]
    assert diff["mean"] == pytest.approx(team["trained"]["return"]["mean"] - team["untrained"]["return"]["mean"])
    for side in ("trained", "untrained"):
        for fig in team[side].values():
            assert fig["ci"][0] <= fig["mean"] <= fig["ci"][1]
        assert 0.0 <= team[side]["crashed"]["mean"] <= 1.0   # a share of the 2 vehicles per episode
