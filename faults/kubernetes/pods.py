"""Pod faults on Kubernetes: a replica crash (delete, grace 0) and a hang (SIGSTOP by exec)."""

from __future__ import annotations

from dataclasses import dataclass

from faults.kubernetes.base import KubeFault
from inferchaos.errors import FaultError
from targets.kubernetes import ops
from targets.kubernetes.connection import Connection


@dataclass
class KubeReplicaCrash(KubeFault):
    name = "replica_crash"

    def _plan(self) -> list[str]:
        return [f"delete pod {p.name} (node {p.node}) with grace 0; its ReplicaSet replaces it" for p in self.choose()]

    def _inject(self) -> None:
        self.victims = self.victims_or_fail()
        conn = Connection(**self.conn)
        for p in self.victims:
            self.died(p)
            self.note("deleted", p.name)
            ops.delete_pod(conn, self.namespace, p.name, 0)


@dataclass
class KubeReplicaHang(KubeFault):
    name = "replica_hang"
    #: the server's pid in its container (1 when it is the container's entrypoint).
    pid: int = 1
    #: a stopped server shows as its pod going unready: the readiness probe must fail first.
    land_within_s = 30.0  # type: ignore[misc]

    def _plan(self) -> list[str]:
        return [f"exec kill -STOP {self.pid} in pod {p.name} ({self.kube.container_of(p)}); kill -CONT on revert"
                for p in self.choose()]

    def _inject(self) -> None:
        self.victims = self.victims_or_fail()
        self.journal([self.undo_exec(p, ["kill", "-CONT", str(self.pid)], f"pod {p.name}: resume")
                      for p in self.victims])
        conn = Connection(**self.conn)
        for p in self.victims:
            result = ops.exec_in(conn, self.namespace, p.name, self.kube.container_of(p), ["kill", "-STOP", str(self.pid)])
            if not result.ok:
                raise FaultError(f"pod {p.name}: kill -STOP {self.pid} failed: {result.detail} {result.stderr.strip()}")
            self.died(p)
            self.note("sigstop", p.name)
