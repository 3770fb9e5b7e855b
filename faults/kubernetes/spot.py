"""Spot reclamation on Kubernetes: one node whose inference pods fit the blast radius is
cordoned and tainted, its inference pods are evicted with the notice as their grace period,
and what is left at the deadline is deleted -- as a reclaimed instance takes its pods down.

The blast radius holds on the node, not on a pod: every selected pod on the chosen node
goes, so a node is chosen only if all of them fit the radius (with GPU bin-packing that may
be none: the plan says so with the node -> pods map). A cordon and a taint hit every tenant
of the node: other workloads on it are named in the plan and refused unless
--allow-shared-nodes. The Node object is never deleted (pod GC would then delete every pod
bound to it, in every namespace, and no cloud brings an object back).

Evictions honour PodDisruptionBudgets: a 429 is reported (the pod got no graceful drain),
not retried as a delete. The node's marks (cordon, taint, run, expiry) are journalled
before they are made and undone on revert, by `inferchaos recover`, or, once expired, by
`inferchaos recover --expired`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from inferchaos.faults.base import Landing
from inferchaos.faults.kubernetes.base import KubeFault
from inferchaos.faults.registry import executes
from inferchaos.faults.undo import step
from inferchaos.ground.errors import UsageError
from inferchaos.targets.kubernetes import nodes as node_marks
from inferchaos.targets.kubernetes import ops
from inferchaos.targets.kubernetes.pods import PodView


@executes("spot_reclamation", "kubernetes")
@dataclass
class KubeSpotReclamation(KubeFault):
    nodes: list[str] = field(default_factory=list, init=False)
    evictions: list[ops.Eviction] = field(default_factory=list, init=False)
    deleted_at_deadline: list[str] = field(default_factory=list, init=False)
    _timer: threading.Timer | None = field(default=None, init=False, repr=False)

    def node_map(self) -> dict[str, list[PodView]]:
        by_node: dict[str, list[PodView]] = {}
        for p in sorted(self.kube.replicas(), key=lambda p: p.name):
            by_node.setdefault(p.node or "<unscheduled>", []).append(p)
        return by_node

    def pick(self) -> tuple[str, list[PodView], list[str]]:
        """(node, the selected pods on it, the other tenants on it): the node whose selected
        pods all fit the radius, fewest other tenants first; else refused with the map."""
        chosen = self.choose()  # the radius: how many pods may go, never the last Ready ones
        limit = len(chosen)
        by_node = {n: ps for n, ps in self.node_map().items() if n != "<unscheduled>"}
        fits = [n for n, ps in by_node.items() if 0 < len(ps) <= limit and all(p.phase == "ready" for p in ps)]
        shown = "; ".join(f"{n}: {', '.join(p.name for p in ps)}" for n, ps in sorted(by_node.items()))
        if not fits:
            raise UsageError(f"{self.name}: no node's inference pods fit the blast radius {self.radius} "
                             f"({limit} of {len(self.kube.replicas())} pods): {shown or 'no pods on nodes'}")
        others = ops.tenants(self.kube.connection, fits)
        mine = {f"{self.namespace}/{p.name}" for ps in by_node.values() for p in ps}
        others = {n: [t for t in ts if t not in mine] for n, ts in others.items()}
        node = min(fits, key=lambda n: (len(others[n]), -len(by_node[n]), n))
        if others[node] and not self.kube.settings.allow_shared_nodes:
            raise UsageError(f"{self.name}: node {node} also runs {', '.join(others[node][:10])}"
                             f"{' ...' if len(others[node]) > 10 else ''}: a cordon and a taint would hit them too; "
                             f"refused (--allow-shared-nodes to accept it). Nodes: {shown}")
        return node, by_node[node], others[node]

    def _plan(self) -> list[str]:
        node, pods, others = self.pick()
        return [f"cordon node {node} and taint it {node_marks.TAINT_KEY}:NoSchedule (expiring after "
                f"{self.kube.settings.expire_after_s} s); evict {', '.join(p.name for p in pods)} with grace "
                f"{int(self.args.notice_s)} s; delete what is left at +{self.args.notice_s:g} s; release the node on revert",
                "other workloads on the node: " + (", ".join(others) if others else "none")]

    def _inject(self) -> None:
        node, pods, _ = self.pick()
        self.victims, self.nodes = pods, [node]
        conn = self.kube.connection
        self.journal([step("kube_node", conn=self.conn, node=node, run=self.run_id)])
        node_marks.reclaim(conn, node, self.run_id, self.expires_at())
        self.note("cordoned", node)
        for p in pods:
            result = ops.evict(conn, self.namespace, p.name, int(self.args.notice_s))
            self.evictions.append(result)
            self.note("evicted" if result.ok else "eviction refused", p.name)
            if result.ok:
                self.died(p)  # terminating: its EndpointSlice entry stops being ready now
        self._timer = threading.Timer(self.args.notice_s, self._deadline)
        self._timer.daemon = True
        self._timer.start()

    @property
    def land_within_s(self) -> float:  # type: ignore[override]
        return self.args.notice_s + 5.0

    def landed(self) -> Landing:
        """The node reads back cordoned and tainted, and its inference pods are out of service."""
        if not self.nodes:
            return Landing(False, "no node was chosen")
        try:
            node = self.kube.core.read_node(self.nodes[0])
        except ApiException as exc:
            return Landing(False, f"node {self.nodes[0]} cannot be read: {exc.status} {exc.reason}")
        taints = {t.key for t in node.spec.taints or []}
        if not node.spec.unschedulable or node_marks.TAINT_KEY not in taints:
            return Landing(False, f"node {self.nodes[0]} is not cordoned and tainted")
        pods = super().landed()
        return Landing(pods.ok, f"node {self.nodes[0]} cordoned and tainted; {pods.evidence}")

    def settle(self) -> None:
        if self._timer is not None:
            self._timer.join(self.args.notice_s + 30)

    def _deadline(self) -> None:
        """The instance is gone: whatever still runs on it goes with it. Grace 1, not 0: a
        grace-0 delete only removes the API object while the containers may run on, holding
        the GPU the replacement needs. Runs on a timer thread: a failure is noted, not raised."""
        conn = self.kube.connection
        for node in self.nodes:
            try:
                left = ops.pods_on(conn, self.namespace, node, self.kube.selector)
            except Exception as exc:  # noqa: BLE001 - the revert still runs; the figures say so
                self.note("deadline failed", f"{node}: {exc}")
                continue
            for name in left:
                try:
                    ops.delete_pod(conn, self.namespace, name, 1)
                except Exception as exc:  # noqa: BLE001
                    self.note("deadline failed", f"{name}: {exc}")
                    continue
                self.deleted_at_deadline.append(name)
                self.note("deleted at deadline", name)
                for p in self.victims:
                    if p.name == name:
                        self.died(p)

    def _revert(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            if self._timer.is_alive():
                self._timer.join(30)  # a deadline already running finishes before the node is released
        super()._revert()

    def figures(self) -> dict[str, Any]:
        return {"nodes": self.nodes,
                "evicted": [e.pod for e in self.evictions if e.ok],
                "refused_by_pdb": {e.pod: e.detail for e in self.evictions if not e.ok},
                "deleted_at_deadline": self.deleted_at_deadline,
                "deadline_failures": [e.subject for e in self.events if e.what == "deadline failed"]}
