"""The unit tier's rule, enforced: a test here starts no process and reaches no address but
loopback. A test that needs either belongs in tests/cluster (or kube, thirdparty)."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
from typing import Any

import pytest


def _refuse_process(*_a: Any, **_kw: Any) -> Any:
    raise AssertionError("the unit tier starts no process: move this test to tests/cluster")


def _loopback_only(connect: Any) -> Any:
    def guarded(sock: socket.socket, address: Any) -> Any:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]
            try:
                loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                raise AssertionError(f"the unit tier reaches loopback only, not {host}")
        return connect(sock, address)
    return guarded


@pytest.fixture(autouse=True)
def _unit_tier(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse_process)
    monkeypatch.setattr(os, "fork", _refuse_process)
    monkeypatch.setattr(os, "posix_spawn", _refuse_process)
    monkeypatch.setattr(socket.socket, "connect", _loopback_only(socket.socket.connect))
