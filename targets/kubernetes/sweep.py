"""`inferchaos recover --expired`: undo what expired, from the marks on the cluster itself.

The ledger lives with the runner; a runner lost with its disk leaves nothing to replay.
So every change carries its own mark (run, expiry, and what to restore), and the sweeper
reads those: nodes (cordon, taint), Deployments scaled by pipeline_lag, and NetworkChaos
objects (Chaos Mesh recovers them at `duration`; the object itself is deleted here). A
hang's SIGCONT and a GPU hog's end are not here: they expire inside the container.
"""

from __future__ import annotations

import time

from kubernetes import client

from targets.kubernetes import nodes, ops
from targets.kubernetes.connection import Connection

RESTORE = "inferchaos.io/restore-replicas"
CHAOS = ("chaos-mesh.org", "v1alpha1", "networkchaos")


def sweep(conn: Connection, namespace: str, now: float | None = None) -> list[str]:
    """What expired was undone: one line each."""
    now = time.time() if now is None else now
    done = nodes.sweep_expired(conn, now)
    for d in client.AppsV1Api(conn.api_client()).list_namespaced_deployment(namespace).items:
        marks = (d.metadata.annotations if d.metadata else None) or {}
        until = nodes.wall(marks.get(nodes.EXPIRES, ""))
        if RESTORE in marks and until is not None and until <= now:
            name = d.metadata.name
            done.append(f"expired {marks[nodes.EXPIRES]}: " + ops.scale(conn, namespace, name, int(marks[RESTORE])))
            ops.annotate_deployment(conn, namespace, name, {RESTORE: None, nodes.EXPIRES: None, nodes.RUN: None})
    if ops.has_custom(conn, *CHAOS[:2], namespace, CHAOS[2]):
        for obj in ops.list_custom(conn, *CHAOS[:2], namespace, CHAOS[2]):
            meta = obj.get("metadata") or {}
            marks = meta.get("annotations") or {}
            until = nodes.wall(marks.get(nodes.EXPIRES, ""))
            if (meta.get("labels") or {}).get("app.kubernetes.io/managed-by") == "inferchaos" \
                    and until is not None and until <= now:
                done.append(f"expired {marks[nodes.EXPIRES]}: "
                            + ops.delete_custom(conn, *CHAOS[:2], namespace, CHAOS[2], meta["name"]))
    return done
