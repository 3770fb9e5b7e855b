"""This checkout as a build sees it."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def clean_copy(dest: Path) -> Path:
    """The files git tracks or would (nothing it ignores): setuptools copies into the checkout's build/lib and never removes
    what a module that moved left there, so a wheel built in place can ship a stale file."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(src.read_bytes())
    return dest
