"""Allure results → a static HTML site, with the npm package `allure` (Allure 3).

Allure 3 needs only Node.js, which CI images and laptops usually have; Allure 2's
commandline needs Java. Without Node the run still has summary.html, and this module
says how to get the rest instead of failing the run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HOW_TO_GET = ("install Node.js 20 or newer (Debian/Ubuntu: apt-get install -y nodejs npm), then "
              "`npm install -g allure` (or `make demo`, which installs it into .venv/node)")


@dataclass(frozen=True)
class Rendered:
    ok: bool
    message: str
    index: Path | None = None


def allure_command() -> list[str] | None:
    """$INFERCHAOS_ALLURE, an `allure` on PATH, the copy `make demo` installs, or npx."""
    if os.environ.get("INFERCHAOS_ALLURE"):
        return os.environ["INFERCHAOS_ALLURE"].split()
    if shutil.which("node") is None:
        return None
    local = Path(sys.prefix) / "node" / "node_modules" / ".bin" / "allure"
    for candidate in (shutil.which("allure"), str(local) if local.exists() else None):
        if candidate:
            return [candidate]
    npx = shutil.which("npx")
    return [npx, "--yes", "allure@3"] if npx else None


def render(results: Path, out: Path, timeout_s: float = 300) -> Rendered:
    if not results.is_dir() or not any(results.glob("*-result.json")):
        return Rendered(False, f"no Allure results in {results} (run pytest with --alluredir {results})")
    command = allure_command()
    if command is None:
        return Rendered(False, f"Node.js not found, so no Allure HTML: {HOW_TO_GET}")
    argv = command + ["generate", str(results), "-o", str(out)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Rendered(False, f"`{' '.join(argv)}` failed: {exc}")
    index = out / "index.html"
    if proc.returncode != 0 or not index.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return Rendered(False, f"`{' '.join(argv)}` exited {proc.returncode}: {tail[0]}")
    return Rendered(True, f"Allure report: {index}", index)
