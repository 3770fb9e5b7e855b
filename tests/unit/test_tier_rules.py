"""The unit tier's guard (tests/unit/conftest.py) refuses what the tier must not do."""

from __future__ import annotations

import socket
import subprocess

import pytest


def test_a_process_is_refused() -> None:
    with pytest.raises(AssertionError, match="starts no process"):
        subprocess.run(["true"], check=False)


def test_an_address_off_loopback_is_refused() -> None:
    with socket.socket() as s, pytest.raises(AssertionError, match="loopback only"):
        s.connect(("192.0.2.1", 80))  # TEST-NET-1: never routed


def test_loopback_is_allowed() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.socket() as client:
            client.connect(server.getsockname())


def test_no_test_module_imports_another():
    """What tests share lives in tests/support/: a test module imported by another is collected
    twice and moves with its tier (five did, and broke when the tiers were made)."""
    import re
    from pathlib import Path

    tests = Path(__file__).resolve().parents[1]
    found = [f"{p.relative_to(tests)}: {m.group(0)}" for p in tests.rglob("*.py")
             for m in re.finditer(r"^\s*(from|import) tests\.(\w+\.)*test_\w+", p.read_text(), re.M)]
    assert found == []
