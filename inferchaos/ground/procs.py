"""Process identity, read from /proc: when a process started (with its pid, that names one
process for good), this boot's id, its state, its process group's live members. Every
layer that must tell its own process from an unrelated one reusing the pid reads these."""

from __future__ import annotations

import os


def _stat(pid: int | str) -> list[bytes] | None:
    """/proc/<pid>/stat after the command name (which may hold spaces and parens):
    [state, ppid, pgrp, ...]; None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid: int | str) -> int | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22):
    with the pid, it names one process for good, so an undo recorded before a crash never
    signals an unrelated process that reused the pid."""
    fields = _stat(pid)
    try:
        return int(fields[19]) if fields else None
    except (IndexError, ValueError):
        return None


def state(pid: int | str) -> str | None:
    """R, S, D, T (stopped), Z (zombie), ...; None when gone."""
    fields = _stat(pid)
    return fields[0].decode() if fields else None


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a group, read from /proc."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat(entry)
        if fields and len(fields) > 2 and fields[0] != b"Z" and int(fields[2]) == pgid:
            pids.append(int(entry))
    return pids


def boot_id() -> str:
    """This boot's id: a pid and start time recorded before a reboot name nothing now."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""
