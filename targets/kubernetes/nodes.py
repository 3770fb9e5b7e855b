"""A node reclaimed by a spot fault, marked so that anyone can see whose it is and until when.

A cordon and a NoSchedule taint affect every tenant of the node, so each is written with
the run that made it and an expiry (annotations on the Node), in one read-modify-write
carrying the resourceVersion (a concurrent writer -- an autoscaler, another operator --
gets its change kept: a 409 is retried on a fresh read). Other taints are kept as they
were, `timeAdded` included. `release` undoes only what this run did (it uncordons only a
node it cordoned), and `sweep_expired` releases every mark whose expiry passed -- what
`inferchaos recover --expired` runs when the runner that made it is gone.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Callable

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from inferchaos.ground.errors import FaultError
from inferchaos.targets.kubernetes.connection import Connection

TAINT_KEY = "inferchaos.io/spot-reclaimed"
RUN = "inferchaos.io/run"
EXPIRES = "inferchaos.io/expires-at"
#: "true" when this run set spec.unschedulable (an operator's own cordon is left alone).
CORDONED = "inferchaos.io/cordoned"
ATTEMPTS = 5


def iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def wall(stamp: str) -> float | None:
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except (AttributeError, ValueError):
        return None


def reclaim(conn: Connection, node: str, run: str, expires_at: float) -> str:
    def change(n: client.V1Node) -> bool:
        if n.metadata.annotations is None:
            n.metadata.annotations = {}
        marks = n.metadata.annotations  # (the model's setter keeps a copy of what it is given)
        holder = marks.get(RUN)
        if holder not in (None, run):
            raise FaultError(f"node {node} is held by inferchaos run {holder} until {marks.get(EXPIRES)}: refused")
        marks.update({RUN: run, EXPIRES: iso(expires_at),
                      CORDONED: "false" if n.spec.unschedulable and holder is None else marks.get(CORDONED, "true")})
        n.spec.unschedulable = True
        n.spec.taints = [t for t in n.spec.taints or [] if t.key != TAINT_KEY] + [
            client.V1Taint(key=TAINT_KEY, value=run, effect="NoSchedule")]
        return True

    _update(conn, node, change)
    return f"node {node}: cordoned and tainted {TAINT_KEY}:NoSchedule until {iso(expires_at)}"


def release(conn: Connection, node: str, run: str) -> str:
    def change(n: client.V1Node) -> bool:
        marks = n.metadata.annotations or {}
        if marks.get(RUN) != run:
            return False
        if marks.get(CORDONED) == "true":
            n.spec.unschedulable = False
        n.spec.taints = [t for t in n.spec.taints or [] if t.key != TAINT_KEY] or None
        for key in (RUN, EXPIRES, CORDONED):
            marks.pop(key, None)
        return True

    changed = _update(conn, node, change)
    if changed is None:
        return f"node {node}: gone"
    return f"node {node}: released (uncordoned if this run cordoned it, taint removed)" if changed else \
        f"node {node}: not held by run {run}, nothing to undo"


def sweep_expired(conn: Connection, now: float | None = None) -> list[str]:
    """Release every node whose inferchaos mark expired; what was done, one line each."""
    now = time.time() if now is None else now
    done = []
    try:
        listed = client.CoreV1Api(conn.api_client()).list_node().items
    except ApiException as exc:
        if exc.status == 403:  # no spot component here: no node was ever marked by this runner
            return ["nodes: not readable by this runner (spot faults not enabled), none swept"]
        raise FaultError(f"cannot list the nodes: {exc.status} {exc.reason}") from None
    failed = []
    for n in listed:
        marks = (n.metadata.annotations if n.metadata else None) or {}
        until = wall(marks.get(EXPIRES, ""))
        if marks.get(RUN) and until is not None and until <= now:
            try:
                done.append(f"expired {marks[EXPIRES]}: " + release(conn, n.metadata.name, marks[RUN]))
            except FaultError as exc:
                failed.append(str(exc))
    if failed:
        raise FaultError("; ".join(failed) + (" (released: " + "; ".join(done) + ")" if done else ""))
    return done


def _update(conn: Connection, node: str, change: Callable[[client.V1Node], bool]) -> bool | None:
    """Read, change, replace with the read's resourceVersion; again on 409. None: no node."""
    core = client.CoreV1Api(conn.api_client())
    for _ in range(ATTEMPTS):
        try:
            current = core.read_node(node)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise FaultError(f"node {node}: cannot read it: {exc.status} {exc.reason}") from None
        if not change(current):
            return False
        try:
            core.replace_node(node, current)
            return True
        except ApiException as exc:
            if exc.status == 409:
                continue  # someone wrote in between: their change stays, ours goes on a fresh read
            if exc.status == 404:
                return None
            raise FaultError(f"node {node}: change refused: {exc.status} {exc.reason}") from None
    raise FaultError(f"node {node}: still conflicting after {ATTEMPTS} attempts (409): left as it is")
