"""Executors for undo steps: how recorded undo data is turned back into actions.

Every executor is idempotent (running it twice, or on a target already restored, is
harmless) and checks identity before acting: a process is named by pid *and* start time.
"""

from __future__ import annotations

import os
import signal
from typing import Any, Callable

from faults.ledger import UndoStep
from inferchaos.errors import FaultError
from targets.local.control import replace_desired
from targets.local.processes import end_groups, group_alive, signal_group, start_time

Executor = Callable[..., str]


def _same_process(pid: int, started: int | None) -> bool:
    return started is not None and start_time(pid) == started


def end_group(pgid: int, started: int | None = None, what: str = "process group") -> str:
    if not group_alive(pgid):
        return f"{what} {pgid}: already gone"
    if start_time(pgid) is not None and not _same_process(pgid, started):
        return f"{what} {pgid}: pid reused by another process, left alone"
    end_groups([pgid], grace_s=3.0)
    return f"{what} {pgid}: ended"


def end_marked(mark: str, what: str = "process") -> str:
    """End the process groups of whatever was started under `mark` (journalled before the
    start, so a crash between the start and its pid's journal leaves nothing behind)."""
    from targets.local.processes import marked

    groups = sorted({g for g in map(_pgid_or_none, marked(mark)) if g is not None and g != os.getpgrp()})
    if not groups:
        return f"{what}: none running"
    end_groups(groups, grace_s=3.0)
    return f"{what}: ended {len(groups)} process group(s)"


def _pgid_or_none(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def signal_process(pid: int, started: int | None, sig: str, what: str = "process") -> str:
    if not _same_process(pid, started):
        return f"{what} {pid}: gone, nothing to do"
    signal_group(pid, getattr(signal, sig))
    return f"{what} {pid}: sent {sig}"


def restore_desired(state_dir: str, values: dict[str, Any]) -> str:
    replace_desired(state_dir, values)
    return f"cluster {state_dir}: runtime settings restored to {values or 'the spec'}"


def clear_toxics(proxy_url: str, route: str) -> str:
    import httpx

    from targets.local.depproxy import ProxyControl

    try:
        ProxyControl(proxy_url).clear(route)
    except httpx.ConnectError:
        return f"dependency proxy {proxy_url}: gone (its cluster stopped), nothing to clear"
    return f"dependency proxy {proxy_url}: {route} restored to full speed"


def clear_perturbation(port: int, pid: int, started: int | None, what: str = "replica") -> str:
    import httpx

    from targets.local.server import PERTURB_PATH

    if not _same_process(pid, started):
        return f"{what}: gone, nothing to clear"
    try:
        httpx.delete(f"http://127.0.0.1:{port}{PERTURB_PATH}", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        raise FaultError(f"{what}: could not stop perturbing its outputs: {exc}") from None
    return f"{what}: answers exact again"


def kube_cordon(conn: dict, node: str, on: bool = False) -> str:
    from targets.kubernetes import Connection, ops

    return ops.cordon(Connection(**conn), node, on)


def kube_taint(conn: dict, node: str, key: str, on: bool = False) -> str:
    from targets.kubernetes import Connection, ops

    return ops.taint(Connection(**conn), node, key, on=on)


def kube_scale(conn: dict, namespace: str, deployment: str, replicas: int) -> str:
    from targets.kubernetes import Connection, ops

    return ops.scale(Connection(**conn), namespace, deployment, replicas)


def kube_delete_custom(conn: dict, group: str, version: str, namespace: str, plural: str, name: str) -> str:
    from targets.kubernetes import Connection, ops

    return ops.delete_custom(Connection(**conn), group, version, namespace, plural, name)


def kube_exec(conn: dict, namespace: str, pod: str, container: str, argv: list[str], what: str = "") -> str:
    from targets.kubernetes import Connection, ops

    result = ops.exec_in(Connection(**conn), namespace, pod, container, argv)
    return f"{what or 'pod ' + pod}: {' '.join(argv)}: {result.detail}"


def stop_cluster(state_dir: str) -> str:
    from targets.local.cluster import LocalCluster  # a heavier import, only for recover

    orphans = LocalCluster.attach(state_dir).stop()
    return f"cluster {state_dir}: stopped" + (f" ({len(orphans)} orphaned groups ended)" if orphans else "")


EXECUTORS: dict[str, Executor] = {
    "end_group": end_group,
    "end_marked": end_marked,
    "signal_process": signal_process,
    "restore_desired": restore_desired,
    "stop_cluster": stop_cluster,
    "clear_toxics": clear_toxics,
    "clear_perturbation": clear_perturbation,
    "kube_cordon": kube_cordon,
    "kube_taint": kube_taint,
    "kube_scale": kube_scale,
    "kube_delete_custom": kube_delete_custom,
    "kube_exec": kube_exec,
}


def run_step(step: UndoStep) -> str:
    try:
        executor = EXECUTORS[step.op]
    except KeyError:
        raise FaultError(f"unknown undo step {step.op!r} in the ledger") from None
    try:
        return executor(**step.args)
    except FaultError:
        raise
    except Exception as exc:  # noqa: BLE001 - reported per step, recover goes on
        raise FaultError(f"undo step {step.op} failed: {exc}") from exc


def step(op: str, **args: Any) -> UndoStep:
    if op not in EXECUTORS:
        raise ValueError(f"no executor for undo op {op!r}")
    return UndoStep(op, args)
