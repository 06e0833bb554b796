"""Shared test helpers. Keep this file small: each helper here is used by several test modules."""
import socket

import pytest


def _free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (the config cannot say 'bind to port 0')."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)  # held open until all are picked, so the n ports differ
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture
def free_ports():
    """`free_ports(n)` -> n distinct free loopback ports."""
    return _free_ports
