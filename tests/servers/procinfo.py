"""What a replica's process group is doing, read from /proc: members, memory, ports.

Why: third-party servers fork (vLLM runs an engine-core process beside its API server)
and bind ports nobody asked for (MLServer's gRPC, vLLM's gloo/ZMQ sockets). A test that
runs several replicas on one box has to know every port each one holds, and "stopped"
has to mean the whole group is gone, not just the pid we started.
"""

from __future__ import annotations

import os
import signal
import time


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids whose process group is `pgid`."""
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


def rss_mib(pids: list[int]) -> float:
    """Sum of VmRSS (shared pages counted once per process, so an upper bound)."""
    total_kb = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                total_kb += next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        except OSError:
            continue
    return total_kb / 1024


def listening_ports(pids: list[int]) -> set[int]:
    """TCP ports (v4 and v6) in LISTEN state on sockets these processes hold."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.readlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A = TCP_LISTEN
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def end_group(pgid: int, grace_s: float = 10.0) -> list[int]:
    """SIGTERM the group (SIGCONT first, so a stopped member can act on it), SIGKILL what
    is left at the deadline; returns the pids that needed the SIGKILL."""
    for sig in (signal.SIGCONT, signal.SIGTERM):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return []
    deadline = time.monotonic() + grace_s
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    stubborn = group_members(pgid)
    if stubborn:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return stubborn
