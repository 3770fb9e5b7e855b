"""Headless Chromium (Debian's `chromium`) for the tests that check a page really renders.

Flags as this machine needs them: no sandbox as root, no network chatter, a fresh profile.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium here (Debian: apt-get install -y chromium; `make setup` does it as root)")


def screenshot(page: Path, out: Path, profile: Path, size: tuple[int, int] = (1280, 2400)) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
                           f"--screenshot={out}", page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and out.is_file(), proc.stderr[-2000:]
    return out


def dump_dom(page: Path, profile: Path) -> str:
    proc = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout
