"""`inferchaos recover --expired`: undo what expired, from the marks on the cluster itself.

The ledger lives with the runner; a runner lost with its disk leaves nothing to replay.
So every change carries its own mark (run, expiry, and what to restore), and the sweeper
reads those: nodes (cordon, taint), Deployments scaled by pipeline_lag, and NetworkChaos
objects (Chaos Mesh recovers them at `duration`; the object itself is deleted here). A
hang's SIGCONT and a GPU hog's end are not here: they expire inside the container.
"""

from __future__ import annotations

import time
from typing import Callable

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from inferchaos.ground.errors import FaultError

from inferchaos.targets.kubernetes import nodes, ops
from inferchaos.targets.kubernetes.connection import Connection

RESTORE = "inferchaos.io/restore-replicas"
CHAOS = ("chaos-mesh.org", "v1alpha1", "networkchaos")


def sweep(conn: Connection, namespace: str, now: float | None = None) -> list[str]:
    """What expired was undone: one line each. Every mark is tried whatever the others did;
    the failures are raised together at the end."""
    now = time.time() if now is None else now
    done: list[str] = []
    failed: list[str] = []

    def attempt(what: str, action: Callable[[], list[str] | str]) -> None:
        try:
            result = action()
        except (ApiException, FaultError, ValueError, KeyError, Urllib3Error, OSError) as exc:
            failed.append(f"{what}: {getattr(exc, 'reason', None) or exc}")
            return
        done.extend(result if isinstance(result, list) else [result])

    attempt("nodes", lambda: nodes.sweep_expired(conn, now))
    deployments: list = []
    attempt("deployments", lambda: deployments.extend(
        client.AppsV1Api(conn.api_client()).list_namespaced_deployment(namespace).items) or [])
    for d in deployments:
        marks = (d.metadata.annotations if d.metadata else None) or {}
        until = nodes.wall(marks.get(nodes.EXPIRES, ""))
        if RESTORE in marks and until is not None and until <= now:
            attempt(f"deployment {d.metadata.name}", lambda d=d, marks=marks: _restore(conn, namespace, d, marks))
    chaos: list = []
    attempt("networkchaos", lambda: chaos.extend(
        ops.list_custom(conn, *CHAOS[:2], namespace, CHAOS[2]) if ops.has_custom(conn, *CHAOS[:2], namespace, CHAOS[2])
        else []) or [])
    for obj in chaos:
        meta = obj.get("metadata") or {}
        marks = meta.get("annotations") or {}
        until = nodes.wall(marks.get(nodes.EXPIRES, ""))
        if (meta.get("labels") or {}).get("app.kubernetes.io/managed-by") == "inferchaos" \
                and until is not None and until <= now:
            attempt(f"networkchaos {meta.get('name')}", lambda meta=meta, marks=marks: (
                f"expired {marks[nodes.EXPIRES]}: "
                + ops.delete_custom(conn, *CHAOS[:2], namespace, CHAOS[2], meta["name"])))
    if failed:
        raise FaultError(f"the sweep undid {len(done)} change(s) and failed on {len(failed)}: " + "; ".join(failed)
                         + (" (undone: " + "; ".join(done) + ")" if done else ""))
    return done


def _restore(conn: Connection, namespace: str, d: client.V1Deployment, marks: dict[str, str]) -> str:
    name = d.metadata.name
    line = f"expired {marks[nodes.EXPIRES]}: " + ops.scale(conn, namespace, name, int(marks[RESTORE]))
    ops.annotate_deployment(conn, namespace, name, {RESTORE: None, nodes.EXPIRES: None, nodes.RUN: None})
    return line
