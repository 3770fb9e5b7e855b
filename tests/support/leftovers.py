"""Checks that the suite left nothing running: by process group, and by command line."""

from __future__ import annotations

import os
from pathlib import Path

from inferchaos.targets.local.processes import group_alive
from inferchaos.targets.local.state import read_state


def processes_mentioning(text: str) -> list[str]:
    """Live processes whose command line contains `text` (e.g. a state dir)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            status = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if status != b"Z" and text in cmdline:
            found.append(f"{entry}: {cmdline.strip()}")
    return found


def live_groups(state_dir: Path | str) -> list[int]:
    state = read_state(state_dir)
    return [g for g in state.pgids() if group_alive(g)] if state else []


def assert_nothing_left(state_dir: Path | str) -> None:
    groups = live_groups(state_dir)
    assert not groups, f"process groups of the cluster still alive: {groups}"
    procs = processes_mentioning(str(Path(state_dir).resolve()))
    assert not procs, f"processes still running for {state_dir}: {procs}"


def module_cluster(tmp_path_factory, name: str, spec, **kwargs):  # type: ignore[no-untyped-def]
    """A test module's own local cluster (yield from it in a module fixture): started, then
    stopped, and checked that nothing of it is left once the module is done."""
    from inferchaos.targets.local import LocalCluster

    state_dir = tmp_path_factory.mktemp(name) / "cluster"
    c = LocalCluster(spec, state_dir, **kwargs).start()
    try:
        yield c
    finally:
        c.stop()
    assert_nothing_left(state_dir)
