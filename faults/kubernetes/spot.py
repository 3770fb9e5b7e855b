"""Spot reclamation on Kubernetes: the node that hosts the chosen pod(s) is cordoned and
tainted, its inference pods are evicted with the notice as their grace period, and what is
left at the deadline is deleted with grace 0 — as a reclaimed instance takes its pods down.

Evictions honour PodDisruptionBudgets: a 429 is reported (the pod got no graceful drain),
not retried as a delete. The node's cordon and taint are journalled before they are made
and undone on revert or by `inferchaos recover`; a deleted node object (`delete_node`) is
not undone: on a real cluster the cloud's node lifecycle brings nodes back.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from faults.kubernetes.base import KubeFault
from faults.local import non_negative
from faults.undo import step
from targets.kubernetes import ops
from targets.kubernetes.connection import Connection


@dataclass
class KubeSpotReclamation(KubeFault):
    name = "spot_reclamation"
    notice_s: float = 30.0
    delete_node: bool = False
    nodes: list[str] = field(default_factory=list, init=False)
    evictions: list[ops.Eviction] = field(default_factory=list, init=False)
    deleted_at_deadline: list[str] = field(default_factory=list, init=False)
    _timer: threading.Timer | None = field(default=None, init=False, repr=False)

    def validate(self) -> None:
        non_negative(self.name, self.notice_s, "notice_s")

    def params(self) -> dict[str, Any]:
        return {"replicas": str(self.radius), "notice_s": self.notice_s, "delete_node": self.delete_node}

    def _nodes(self) -> list[str]:
        return sorted({p.node for p in self.choose() if p.node})

    def _plan(self) -> list[str]:
        lines = []
        for node in self._nodes():
            on_node = [p.name for p in self.kube.replicas() if p.node == node]
            lines.append(f"cordon node {node} and taint it {ops.TAINT_KEY}=true:NoSchedule; evict "
                         f"{', '.join(on_node)} with grace {int(self.notice_s)} s; delete what is left with grace 0 "
                         f"at +{self.notice_s:g} s" + ("; then delete the node object" if self.delete_node else "")
                         + "; uncordon and untaint on revert")
        return lines or ["no Ready pod on a node: nothing to reclaim"]

    def _inject(self) -> None:
        self.victims = self.victims_or_fail()
        self.nodes = self._nodes()
        conn = Connection(**self.conn)
        self.journal([u for node in self.nodes for u in (
            step("kube_cordon", conn=self.conn, node=node, on=False),
            step("kube_taint", conn=self.conn, node=node, key=ops.TAINT_KEY, on=False))])
        on_nodes = [p for p in self.kube.replicas() if p.node in self.nodes]
        self.victims = on_nodes
        for node in self.nodes:
            ops.cordon(conn, node)
            ops.taint(conn, node)
            self.note("cordoned", node)
        for p in on_nodes:
            result = ops.evict(conn, self.namespace, p.name, int(self.notice_s))
            self.evictions.append(result)
            self.note("evicted" if result.ok else "eviction refused", p.name)
            if result.ok:
                self.died(p)  # terminating: its Service takes it out of the endpoints now
        self._timer = threading.Timer(self.notice_s, self._deadline)
        self._timer.daemon = True
        self._timer.start()

    @property
    def land_within_s(self) -> float:  # type: ignore[override]
        return self.notice_s + 5.0

    def _deadline(self) -> None:
        """The instance is gone: whatever still runs on it goes with it."""
        conn = Connection(**self.conn)
        for node in self.nodes:
            for name in ops.pods_on(conn, self.namespace, node, self.kube.selector):
                ops.delete_pod(conn, self.namespace, name, 0)
                self.deleted_at_deadline.append(name)
                self.note("deleted at deadline", name)
                for p in self.victims:
                    if p.name == name:
                        self.died(p)
            if self.delete_node:
                ops.delete_node(conn, node)
                self.note("node deleted", node)

    def _revert(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        super()._revert()

    def figures(self) -> dict[str, Any]:
        return {"nodes": self.nodes,
                "evicted": [e.pod for e in self.evictions if e.ok],
                "refused_by_pdb": {e.pod: e.detail for e in self.evictions if not e.ok},
                "deleted_at_deadline": self.deleted_at_deadline}
