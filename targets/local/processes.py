"""Process groups the local cluster owns, and how to end them whatever state they are in.

Every process we start gets a session (and so a process group) of its own: a signal to
the group reaches whatever a replica command forked, and "nothing left running" can be
checked by asking whether the group still exists.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterable, Mapping


def spawn(argv: list[str], log_path: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(env) if env is not None else None,
        )


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to a whole group; False when the group is already gone."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a group, read from /proc."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != b"Z" and int(fields[2]) == pgid:
            pids.append(int(entry))
    return pids


def group_alive(pgid: int) -> bool:
    return bool(group_members(pgid))


def stopped(pid: int) -> bool:
    """True when a process is stopped by a signal (SIGSTOP), as a hung replica is."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] in (b"T", b"t")
    except OSError:
        return False


def end_groups(pgids: Iterable[int], grace_s: float = 5.0) -> list[int]:
    """SIGTERM (after SIGCONT, so stopped processes can act on it), then SIGKILL at the
    deadline. Returns the groups that were still alive and had to be killed."""
    pgids = [p for p in set(pgids) if p and p != os.getpgrp()]
    for pgid in pgids:
        signal_group(pgid, signal.SIGCONT)
        signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(group_alive(p) for p in pgids):
        time.sleep(0.05)
    killed = [p for p in pgids if group_alive(p)]
    for pgid in killed:
        signal_group(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(group_alive(p) for p in killed):
        time.sleep(0.05)
    return killed


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22):
    with the pid, it names one process for good, so an undo recorded before a crash never
    signals an unrelated process that reused the pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


#: the environment variable a process started under a journalled mark carries.
MARK_ENV = "INFERCHAOS_MARK"


def marked(mark: str) -> list[int]:
    """Pids of the processes started under `mark` (in their environment, or as an argument).

    The undo of a process must be journalled before the process exists; its pid is not
    known then, a mark chosen beforehand is. A uuid mark names only what we started."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if f"{MARK_ENV}={mark}".encode() in env or mark.encode() in args:
            found.append(int(entry))
    return found
