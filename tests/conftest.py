"""Shared test helpers. Keep this file small: each helper here is used by several test modules."""
import pytest

from magicmask.protocol.transport import free_ports as _free_ports


@pytest.fixture
def free_ports():
    """`free_ports(n)` -> n distinct free loopback ports."""
    return _free_ports
