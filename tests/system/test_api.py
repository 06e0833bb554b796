"""The Python API (app/api.py): the README's example runs as written, from a folder outside the repository;
`train` fails with exceptions before it makes anything; `load_config` reads presets; `magicmask report` and
the command-line checks that must come before any run directory exists."""
import re
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import magicmask
from magicmask.api import CannotStart, TrainingFailed
from magicmask.cli import main as cli_main
from magicmask.protocol.config import ConfigError
from tests.helpers import free_port_overrides

ROOT = Path(__file__).resolve().parents[2]


def readme_example() -> str:
    """The first python block of the README's "Python API" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "README.md: no python block in the Python API section"
    return blocks[0]


# The example runs verbatim; only the training's ports (free ones, metrics off) and its budgets are changed, by
# wrapping the API functions it calls (magicmask.train resolves to magicmask.api.train on every use).
PRELUDE = textwrap.dedent("""\
    import magicmask.api as _api
    _train, _explain = _api.train, _api.explain_run
    _api.train = lambda config, run_dir=None, overrides=(): _train(
        config, run_dir, [*overrides, *{train!r}])
    _api.explain_run = lambda run_dir, checkpoint=None, overrides=(), **kw: _explain(
        run_dir, checkpoint, [*overrides, *{explain!r}], **kw)
    """)


@pytest.mark.slow
def test_readme_example_trains_explains_and_loads_from_any_folder(tmp_path):
    train = [*free_port_overrides(), "run.progress=false", "run.total_steps=1500", "env.eval_every=0"]
    explain = ["explain.episodes=3", "explain.top_states=2"]
    code = PRELUDE.format(train=train, explain=explain) + readme_example()
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=500)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    run_dir = tmp_path / "runs" / "api-demo"
    assert (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints" / "latest").is_file()
    for name in ("index.html", "importance.csv", "fidelity.csv", "metrics.json"):
        assert (run_dir / "report" / name).is_file(), name
    assert "report: runs/api-demo/report/index.html" in res.stdout
    assert re.search(r"agent 0 plays \d+", res.stdout)


def test_load_config_reads_presets_files_and_overrides(tmp_path):
    cfg = magicmask.load_config("gates", ["run.agents=2"])
    assert (cfg.env.name, cfg.run.agents, cfg.run.total_steps) == ("gates", 2, 40000)   # 40000: gates.yaml's
    (tmp_path / "mine.yaml").write_text("env:\n  name: gates\nrun:\n  total_steps: 77\n")
    assert magicmask.load_config(tmp_path / "mine.yaml").run.total_steps == 77
    assert magicmask.load_config().env.name == "connect4"   # no file: the defaults
    with pytest.raises(ConfigError, match="presets: .*connect4.*gates"):
        magicmask.load_config("no-such-preset")


def test_train_refuses_bad_settings_before_making_anything(tmp_path):
    cfg = magicmask.load_config("gates")
    with pytest.raises(ConfigError, match="run.agents"):
        magicmask.train(cfg, tmp_path / "a", ["run.agents=0"])
    with pytest.raises(ConfigError, match="no checkpoint"):
        magicmask.train(cfg, tmp_path / "b", ["learner.resume=true"])
    with pytest.raises(ConfigError, match="env.name"):
        magicmask.train("gates", tmp_path / "c", ["env.name=nosuch.module:factory"])
    assert list(tmp_path.iterdir()) == []
    assert cfg.run.name == ""   # the caller's config is left as it was


def test_train_raises_when_a_process_fails_and_restores_signal_handlers(tmp_path):
    """The learner cannot start (its checkpoint is garbage) and run.max_restarts=0 allows no restart: the run
    stops and train raises TrainingFailed with the supervisor's status instead of exiting; the caller's
    SIGINT/SIGTERM handlers are back afterwards."""
    run_dir = tmp_path / "r"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "ckpt-00000001.pt").write_bytes(b"not a checkpoint")
    (run_dir / "checkpoints" / "latest").write_text("ckpt-00000001.pt")
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingFailed) as e:
        magicmask.train("gates", run_dir, ["run.progress=false", "run.max_restarts=0", "learner.resume=true"])
    assert e.value.code == 1 and e.value.run_dir == run_dir and "logs" in str(e.value)
    assert "Traceback" in (run_dir / "logs" / "learner.log").read_text()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers


def test_train_refuses_a_port_in_use_before_starting_anything(tmp_path):
    overrides = [*free_port_overrides(), "run.progress=false"]
    port = int(next(o for o in overrides if o.startswith("net.learner_fragments_port=")).split("=")[1])
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        with pytest.raises(CannotStart, match=f"port {port} on 127.0.0.1 \\(net.learner_fragments_port\\) is in use"):
            magicmask.train("gates", tmp_path / "r", overrides)
    assert not (tmp_path / "r").exists()


def test_train_needs_the_main_thread(tmp_path):
    import threading
    errors = []
    t = threading.Thread(target=lambda: _capture(errors, magicmask.train, "gates", tmp_path / "t"))
    t.start()
    t.join(30)
    assert errors and isinstance(errors[0], RuntimeError) and "main thread" in str(errors[0])
    assert not (tmp_path / "t").exists()


def _capture(errors, fn, *args):
    try:
        fn(*args)
    except Exception as e:
        errors.append(e)


def test_actor_with_an_agent_id_out_of_range_makes_no_run_dir(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert cli_main(["actor", "--agent", "9", "--config", "gates", "--set", "run.agents=4",
                     "--run-dir", str(run_dir)]) == 2
    assert "--agent 9: allowed 0..3" in capsys.readouterr().err
    assert not run_dir.exists()


def test_version_and_preset_errors(capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"magicmask {magicmask.__version__}"
    assert cli_main(["config", "--config", "no-such-preset"]) == 2
    err = capsys.readouterr().err
    assert "no such file and no preset" in err and "connect4" in err and "gates" in err
    assert cli_main(["config", "--config", "connect4", "--set", "run.name=x"]) == 0
    assert "name: connect4" in capsys.readouterr().out


def test_keys_subcommand_makes_key_pairs(tmp_path, capsys):
    assert cli_main(["keys", "generate", str(tmp_path / "k"), "--agents", "1", "--name", "monitor"]) == 0
    names = sorted(p.name for p in (tmp_path / "k" / "public_keys").iterdir())
    assert names == ["actor-0.key", "broker.key", "learner.key", "monitor.key"]
    assert cli_main(["keys", "generate", str(tmp_path / "k"), "--agents", "-1"]) == 2


def test_report_needs_a_run_directory(tmp_path, capsys):
    assert cli_main(["report", str(tmp_path / "nope")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert not (tmp_path / "nope").exists()
