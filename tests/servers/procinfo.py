"""What a replica's process group is doing, read from /proc: members, memory, ports.

Why: third-party servers fork (vLLM runs an engine-core process beside its API server)
and bind ports nobody asked for (MLServer's gRPC, vLLM's gloo/ZMQ sockets). A test that
runs several replicas on one box has to know every port each one holds, and "stopped"
has to mean the whole group is gone, not just the pid we started.
"""

from __future__ import annotations

import os

from inferchaos.targets.local.processes import end_groups, group_members

__all__ = ["end_groups", "group_members", "listening_ports", "rss_mib"]


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
