"""A run's ledger kept in the cluster: one ConfigMap per run, beside the changes it records.

Why: the file ledger lives on the runner's disk (a PVC, a laptop). When the runner is lost,
whoever comes next -- the next nightly run, an operator at another machine -- must see what
is still applied and undo it. The ConfigMap is written before each change (as the file is),
so it is never behind the cluster; it names who made the run, where it ran and when its
changes expire; it is deleted once every change in it is reverted. An open one that
outlives its expiry is what the PrometheusRule `InferchaosLedgerOpen` alerts on
(kube-state-metrics' `kube_configmap_created`).

Lines are the file ledger's JSON lines, unread here: the entries are the faults layer's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from inferchaos.ground.errors import FaultError
from inferchaos.targets.kubernetes.connection import Connection
from inferchaos.targets.kubernetes.nodes import EXPIRES, iso, wall

PREFIX = "inferchaos-ledger-"
KIND_LABEL = "inferchaos.io/ledger"
OPERATOR = "inferchaos.io/operator"
RUNNER_POD = "inferchaos.io/runner-pod"
KEY = "entries.jsonl"
MANAGED = {"app.kubernetes.io/managed-by": "inferchaos", KIND_LABEL: "run"}


@dataclass(frozen=True)
class RunLedger:
    name: str
    lines: tuple[str, ...]
    operator: str
    #: the pod the runner ran in (a nightly run), or "" (a person's machine).
    runner_pod: str
    expires_at: float | None


def _core(conn: Connection) -> client.CoreV1Api:
    return client.CoreV1Api(conn.api_client())


def append(conn: Connection, namespace: str, run: str, line: str, operator: str, runner_pod: str,
           expires_at: float) -> tuple[tuple[str, ...], str]:
    """Add one line to the run's ConfigMap (created on the first), moving its expiry to the
    latest change's. Read-modify-write with resourceVersion: a 409 reads again. Returns
    the lines it now holds and its resourceVersion (what a delete may be conditioned on)."""
    api, name = _core(conn), PREFIX + run
    for _ in range(5):
        try:
            cm = api.read_namespaced_config_map(name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise FaultError(f"ledger ConfigMap {name}: read refused: {exc.status} {exc.reason}") from None
            body = client.V1ConfigMap(metadata=client.V1ObjectMeta(
                name=name, namespace=namespace, labels=dict(MANAGED),
                annotations={OPERATOR: operator, RUNNER_POD: runner_pod, EXPIRES: iso(expires_at)}),
                data={KEY: line + "\n"})
            try:
                made = api.create_namespaced_config_map(namespace, body)
                return (line,), made.metadata.resource_version
            except ApiException as exc2:
                if exc2.status == 409:
                    continue
                raise FaultError(f"ledger ConfigMap {name}: create refused: {exc2.status} {exc2.reason}") from None
        notes = dict(cm.metadata.annotations or {})
        old = wall(notes.get(EXPIRES, "")) or 0.0
        notes[EXPIRES] = iso(max(old, expires_at))
        cm.metadata.annotations = notes
        cm.data = {**(cm.data or {}), KEY: (cm.data or {}).get(KEY, "") + line + "\n"}
        try:
            done = api.replace_namespaced_config_map(name, namespace, cm)
            return _lines(cm.data), done.metadata.resource_version
        except ApiException as exc:
            if exc.status != 409:
                raise FaultError(f"ledger ConfigMap {name}: update refused: {exc.status} {exc.reason}") from None
        time.sleep(0.1)
    raise FaultError(f"ledger ConfigMap {name}: five conflicting writers in a row")


def ledgers(conn: Connection, namespace: str) -> list[RunLedger]:
    """Every run ledger in the namespace, whoever wrote it."""
    try:
        found = _core(conn).list_namespaced_config_map(namespace, label_selector=f"{KIND_LABEL}=run")
    except ApiException as exc:
        raise FaultError(f"ledger ConfigMaps in {namespace}: list refused: {exc.status} {exc.reason}") from None
    out = []
    for cm in found.items:
        notes = cm.metadata.annotations or {}
        lines = _lines(cm.data)
        out.append(RunLedger(cm.metadata.name, lines, notes.get(OPERATOR, ""), notes.get(RUNNER_POD, ""),
                             wall(notes.get(EXPIRES, ""))))
    return sorted(out, key=lambda r: r.name)


def _lines(data: dict | None) -> tuple[str, ...]:
    return tuple(x for x in (data or {}).get(KEY, "").splitlines() if x.strip())


def delete(conn: Connection, namespace: str, name: str, resource_version: str | None = None) -> str:
    """Delete the run's ConfigMap; with `resource_version`, only if nobody wrote it since
    (a 409 then: a newer entry keeps it open)."""
    options = client.V1DeleteOptions(preconditions=client.V1Preconditions(resource_version=resource_version)) \
        if resource_version else None
    try:
        _core(conn).delete_namespaced_config_map(name, namespace, body=options)
    except ApiException as exc:
        if exc.status == 404:
            return f"ledger {name}: already gone"
        if exc.status == 409:
            return f"ledger {name}: kept (written since it was read)"
        raise FaultError(f"ledger ConfigMap {name}: delete refused: {exc.status} {exc.reason}") from None
    return f"ledger {name}: closed (every change reverted)"


def runner_alive(conn: Connection, namespace: str, pod: str) -> bool:
    """The runner's pod still running: its own run will revert what it applied."""
    try:
        p = _core(conn).read_namespaced_pod(pod, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise FaultError(f"runner pod {pod}: read refused: {exc.status} {exc.reason}") from None
    return p.status is not None and p.status.phase in ("Pending", "Running") and p.metadata.deletion_timestamp is None
