"""Fixtures for the suite's own tests (the experiments' wiring lives in the top-level conftest)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest


@pytest.fixture
def pytester_free_run(tmp_path: Path) -> Callable[[str], subprocess.CompletedProcess]:
    """Run a small test file in a separate pytest process, so it can fail or be killed
    without taking this session with it."""

    def run(source: str, timeout: float = 120) -> subprocess.CompletedProcess:
        inner = tmp_path / "inner"
        inner.mkdir(exist_ok=True)
        (inner / "test_inner.py").write_text(source)
        (inner / "pytest.ini").write_text("[pytest]\n")
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:locust", "-p", "no:cacheprovider", str(inner)],
            capture_output=True, text=True, timeout=timeout, cwd=inner,
        )

    return run
