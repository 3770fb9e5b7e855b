"""The `inferchaos` command as an operator runs it: its own process, its output, its exit code."""

from __future__ import annotations

import subprocess
import sys


def inferchaos(*args: str, env: dict | None = None, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inferchaos.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got: {text!r}"
    return lines[0]
