"""app/preflight.py without starting processes: which ports `magicmask run` chooses itself (net.auto_ports) and
which it keeps, and the one-line refusal of a port in use."""
import errno
import os
import shutil
import socket

import pytest

from magicmask.preflight import CannotStart, check_ports, check_run_dir, take_ports
from magicmask.protocol import config as C

DEFAULTS = C.NetConfig()


def test_loopback_ports_at_their_defaults_are_replaced_by_free_ones():
    cfg = C.load(overrides=["run.agents=3"], environ={})
    items = take_ports(cfg)
    assert len(items) == 7 and cfg.net.metrics_port != DEFAULTS.metrics_port
    for f in C.PORT_FIELDS:
        assert getattr(cfg.net, f) != getattr(DEFAULTS, f) and f"net.{f}={getattr(cfg.net, f)}" in items
    check_ports(cfg)   # all of them free, the metrics block (broker, learner, 3 actors) included


@pytest.mark.skipif(not socket.has_ipv6, reason="this Python has no IPv6")
def test_an_ipv6_loopback_gets_free_ports_and_sockets_that_reach_each_other():
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError as e:
        pytest.skip(f"no IPv6 loopback on this machine: {e}")
    cfg = C.load(overrides=["run.agents=2", "net.host=::1"], environ={})
    assert len(take_ports(cfg)) == 7 and cfg.net.broker_router_port != DEFAULTS.broker_router_port
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", cfg.net.broker_router_port))   # a port free on ::1, where the run will bind it
    # and the run's sockets bind and connect there (tcp://[::1]:port, ZeroMQ's IPV6 option)
    import zmq
    from magicmask.protocol.transport import make_socket, tcp
    assert tcp("::1", 5) == "tcp://[::1]:5" and tcp("127.0.0.1", 5) == "tcp://127.0.0.1:5"
    ctx = zmq.Context()
    try:
        pull, push = make_socket(ctx, zmq.PULL), make_socket(ctx, zmq.PUSH)
        pull.bind(tcp("::1", cfg.net.broker_router_port))
        push.connect(tcp("::1", cfg.net.broker_router_port))
        push.send(b"over ipv6")
        assert pull.poll(5000) and pull.recv() == b"over ipv6"
    finally:
        ctx.destroy(linger=0)


def test_ports_set_by_the_user_a_remote_host_or_auto_ports_false_are_kept():
    cfg = C.load(overrides=["net.broker_reports_port=6001", "net.metrics_port=0"], environ={})
    take_ports(cfg)
    assert cfg.net.broker_reports_port == 6001 and cfg.net.metrics_port == 0   # set: kept; metrics off: off
    assert cfg.net.learner_fragments_port != DEFAULTS.learner_fragments_port
    cfg = C.load(overrides=["net.metrics_host=0.0.0.0"], environ={})   # metrics for a remote Prometheus
    take_ports(cfg)
    assert cfg.net.metrics_port == DEFAULTS.metrics_port and cfg.net.broker_router_port != DEFAULTS.broker_router_port
    cfg = C.load(overrides=["net.auto_ports=false"], environ={})
    assert take_ports(cfg) == [] and cfg.net == C.NetConfig(auto_ports=False)
    cfg = C.load(overrides=["net.host=0.0.0.0", "net.insecure=true"], environ={})   # reachable: ports as set
    assert take_ports(cfg) == [f"net.metrics_port={cfg.net.metrics_port}"]   # loopback metrics: still free ones


@pytest.mark.parametrize("field", ["net.learner_router_port", "net.metrics_port"])
def test_a_port_in_use_is_named_with_its_holder(field):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        cfg = C.load(overrides=[f"{field}={port}", "run.agents=1"], environ={})
        take_ports(cfg)
        with pytest.raises(CannotStart) as e:
            check_ports(cfg)
    msg = str(e.value)
    assert msg.startswith(f"port {port} on 127.0.0.1 ({field}") and " is in use by " in msg and "\n" not in msg
    try:
        import psutil  # noqa: F401
    except ImportError:
        return
    assert f"pid {os.getpid()} (" in msg


def test_a_run_directory_that_cannot_take_a_durable_write_is_refused(tmp_path, monkeypatch):
    check_run_dir(tmp_path / "ok", 0)
    assert list((tmp_path / "ok").iterdir()) == [], "the probe file was left behind"

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(CannotStart, match=r"run directory .*/full cannot be written: No space left on device"):
        check_run_dir(tmp_path / "full", 0)
    assert list((tmp_path / "full").iterdir()) == []


def test_a_disk_with_less_room_than_run_min_free_mb_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 << 30, 10 << 30, 5 << 20))
    with pytest.raises(CannotStart) as e:
        check_run_dir(tmp_path / "run", 100)
    assert "its disk has 5.0 MiB free, less than run.min_free_mb=100" in str(e.value)
    check_run_dir(tmp_path / "run", 5)


@pytest.mark.parametrize("override, message", [
    ("ppo.board_filters=8", r"ppo.board_filters=8 needs an env whose observation is a board"),
    ("ppo.mirror=true", r"ppo.mirror=true needs a board env that declares its mirror"),
    ("ppo.action_head=features", r"ppo.action_head='features' needs an env with action features")])
def test_networks_that_do_not_fit_the_env_are_refused_before_any_process_starts(tmp_path, override, message):
    """`magicmask run` builds one agent's networks before starting anything: a setting the env cannot take
    is a config error naming it, and the run directory is never made."""
    from magicmask.api import train
    cfg = C.load(overrides=["env.name=gates", override], environ={})
    with pytest.raises(C.ConfigError, match=message):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
