"""Undo on a Kubernetes cluster: release nodes, scale back, delete chaos objects, resume.

A step read from a ledger (a file, or a ConfigMap anyone with the runner's RBAC could have
planted) names the cluster by its kube-system UID and at most a context: how to reach it
always comes from the operator (the options of `recover`/`revert`, the connection this
process made its changes through, else $KUBECONFIG or the service account), never from
the ledger, since loading a kubeconfig runs its credential plugins. Each executor acts
only in an allowed namespace (never a system one; while a namespace is swept, only that
one), only on the kinds the suite creates, and only while the object itself carries the
run's mark.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Iterator

from inferchaos.ground.errors import FaultError

#: the only custom objects the suite creates (and so the only ones its undo deletes).
CUSTOM_KINDS = frozenset({("chaos-mesh.org", "v1alpha1", "networkchaos")})
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
RUN_ID = re.compile(r"[0-9a-f]{1,32}")
MAX_REPLICAS = 1000

_VIA: list[Any] = []
_OWN: dict[str, Any] = {}
_SCOPE: list[str] = []
_PINNED: set[tuple[str | None, str, str]] = set()


@contextlib.contextmanager
def via(connection: Any) -> Iterator[None]:
    """Undo Kubernetes steps through `connection` (the operator's own kubeconfig, or the
    in-cluster account). The cluster is still the recorded one: its identity is checked."""
    _VIA.append(connection)
    try:
        yield
    finally:
        _VIA.pop()


@contextlib.contextmanager
def within(namespace: str) -> Iterator[None]:
    """While a namespace's own ledgers are replayed, a step naming another is refused."""
    _SCOPE.append(namespace)
    try:
        yield
    finally:
        _SCOPE.pop()


def use(connection: Any) -> None:
    """The connection this process changes a cluster through (a runner's target): its own
    reverts go back through it, whatever the ledger says."""
    if connection.cluster:
        _OWN[connection.cluster] = connection


def check_conn(conn: Any) -> None:
    if not (isinstance(conn, dict) and set(conn) == {"context", "cluster"} and isinstance(conn["cluster"], str)
            and conn["cluster"] and isinstance(conn["context"], str)):
        raise FaultError("conn must be exactly {context, cluster} (a kube-system UID; never a kubeconfig): refused")


def kube_connection(conn: dict) -> Any:
    """How to reach the cluster a step names: the operator's connection, pinned to its UID."""
    from inferchaos.targets.kubernetes.connection import IN_CLUSTER, Connection

    check_conn(conn)
    cluster, context = conn["cluster"], conn["context"]
    if _VIA:
        c = _VIA[-1]
    elif cluster in _OWN:
        c = _OWN[cluster]
    elif context == IN_CLUSTER:
        c = Connection(None, IN_CLUSTER)
    else:
        c = Connection.resolve(None, context)
    c = Connection(c.kubeconfig, c.context, cluster)
    key = (c.kubeconfig, c.context, cluster)
    if key not in _PINNED:
        c.pinned().close()
        _PINNED.add(key)
    return c


def checked_namespace(namespace: str) -> None:
    from inferchaos.targets.kubernetes.settings import SYSTEM_NAMESPACES

    if not DNS_LABEL.fullmatch(namespace) or namespace in SYSTEM_NAMESPACES:
        raise FaultError(f"namespace {namespace!r}: not one the suite may touch: refused")
    if _SCOPE and namespace != _SCOPE[-1]:
        raise FaultError(f"namespace {namespace}: outside the swept namespace {_SCOPE[-1]}: refused")


def _names(*names: str) -> None:
    for name in names:
        if not DNS_NAME.fullmatch(name):
            raise FaultError(f"{name!r} is not a Kubernetes object name: refused")


def _run(run: str) -> None:
    if not RUN_ID.fullmatch(run):
        raise FaultError(f"run {run!r} is not a run id the suite makes: refused")


def kube_node(conn: dict, node: str, run: str) -> str:
    """Uncordon (if this run cordoned it), drop this run's taint and its marks: only a node
    whose own annotations say this run holds it (nodes have no namespace: that is the proof)."""
    from inferchaos.targets.kubernetes import nodes

    _names(node)
    _run(run)
    return nodes.release(kube_connection(conn), node, run)


def kube_scale(conn: dict, namespace: str, deployment: str, replicas: int, run: str) -> str:
    """Scale a Deployment back, only while it carries this run's mark (the fault's annotation)."""
    from inferchaos.targets.kubernetes import ops
    from inferchaos.targets.kubernetes.nodes import EXPIRES, RUN
    from inferchaos.targets.kubernetes.sweep import RESTORE

    checked_namespace(namespace)
    _names(deployment)
    _run(run)
    if not 0 <= replicas <= MAX_REPLICAS:
        raise FaultError(f"deployment {deployment}: {replicas} replicas is out of range: refused")
    c = kube_connection(conn)
    marks = ops.deployment_annotations(c, namespace, deployment)
    if marks is None:
        return f"deployment {deployment}: gone"
    if marks.get(RUN) != run:
        return f"deployment {deployment}: carries no mark of run {run}, left alone"
    done = ops.scale(c, namespace, deployment, replicas)
    ops.annotate_deployment(c, namespace, deployment, {RESTORE: None, EXPIRES: None, RUN: None})
    return done


def kube_delete_custom(conn: dict, group: str, version: str, namespace: str, plural: str, name: str,
                       run: str) -> str:
    """Delete a chaos object the suite made, only while it carries this run's mark."""
    from inferchaos.targets.kubernetes import ops
    from inferchaos.targets.kubernetes.nodes import RUN

    if (group, version, plural) not in CUSTOM_KINDS:
        raise FaultError(f"{plural}.{group}/{version}: not a kind the suite creates: refused")
    checked_namespace(namespace)
    _names(name)
    _run(run)
    c = kube_connection(conn)
    obj = ops.get_custom(c, group, version, namespace, plural, name)
    if obj is None:
        return f"{plural} {name}: already gone"
    meta = obj.get("metadata") or {}
    if (meta.get("annotations") or {}).get(RUN) != run \
            or (meta.get("labels") or {}).get("app.kubernetes.io/managed-by") != "inferchaos":
        return f"{plural} {name}: carries no mark of run {run}, left alone"
    return ops.delete_custom(c, group, version, namespace, plural, name)


def kube_resume(conn: dict, namespace: str, pod: str, container: str, pid: int, started: int) -> str:
    """SIGCONT to the process a hang stopped, if it is still that process (pid and start time)."""
    from inferchaos.targets.kubernetes import processes

    checked_namespace(namespace)
    _names(pod, container)
    return processes.resume(kube_connection(conn), namespace, pod, container, pid, started)


def kube_end_hog(conn: dict, namespace: str, pod: str, container: str) -> str:
    from inferchaos.targets.kubernetes import processes

    checked_namespace(namespace)
    _names(pod, container)
    return processes.end_hog(kube_connection(conn), namespace, pod, container)
