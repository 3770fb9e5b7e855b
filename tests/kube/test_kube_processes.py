"""The process listing the hang and crash faults run in a container, run here on real /proc.

The script is what exec sends (sh and /proc only); parsing it here, against this machine's
kernel, checks the stat fields it reads (state, ppid, start time) without a cluster.
"""

from __future__ import annotations

import signal
import subprocess
import time

from inferchaos.targets.kubernetes.processes import LIST, parse


def listing() -> list:
    return parse(subprocess.run(["sh", "-c", LIST], capture_output=True, text=True, timeout=30).stdout)


def test_the_listing_sees_a_stopped_process_as_T_and_never_itself():
    child = subprocess.Popen(["sleep", "300"])
    try:
        child.send_signal(signal.SIGSTOP)
        time.sleep(0.2)
        procs = {p.pid: p for p in listing()}
        assert procs[child.pid].state == "T" and procs[child.pid].cmdline == "sleep 300"
        with open(f"/proc/{child.pid}/stat") as f:
            started = int(f.read().rsplit(")", 1)[1].split()[19])
        assert procs[child.pid].started == started
        assert not any("inferchaos-ps" in p.cmdline for p in procs.values())
        child.send_signal(signal.SIGCONT)
        time.sleep(0.2)
        assert {p.pid: p for p in listing()}[child.pid].state in ("S", "R")
    finally:
        child.kill()
        child.wait()


def test_a_command_name_with_spaces_and_parens_parses():
    (p,) = parse("123 (my (odd) name) S 1 123 123 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 10"
                 "\tpython -m server\n")
    assert (p.pid, p.ppid, p.state, p.started, p.cmdline) == (123, 1, "S", 98765, "python -m server")
