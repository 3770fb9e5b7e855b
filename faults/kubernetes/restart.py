"""Replica restart on Kubernetes: SIGTERM to the server process inside its container (found
by its command line, as the crash finds it); the server drains and exits, the container with
it, and the kubelet restarts the container in the same pod -- a restart in place, with the
pod's IP, volumes and node kept. The kubelet sends no SIGKILL here: a server that ignores
SIGTERM is never restarted, and the landing (restartCount unchanged) says so."""

from __future__ import annotations

from dataclasses import dataclass

from inferchaos.faults.kubernetes.pods import KubeReplicaCrash
from inferchaos.faults.registry import executes
from inferchaos.targets.kubernetes import ops


@executes("replica_restart", "kubernetes")
@dataclass
class KubeReplicaRestart(KubeReplicaCrash):
    """A crash's bookkeeping and landing (the container restarted), with SIGTERM for SIGKILL."""

    def _plan(self) -> list[str]:
        return [f"SIGTERM the server process in pod {p.name} ({self.kube.container_of(p)}, node {p.node}), found by "
                f"its command line ({self.kube.settings.server_process or 'the container command'}); it drains and "
                "exits, and the kubelet restarts the container" for p in self.choose()]

    def _inject(self) -> None:
        self.victims = self.victims_or_fail()
        conn = self.kube.connection
        found = {p.name: self._find(p) for p in self.victims}  # every victim checked before any is touched
        for p in self.victims:
            self.restarts_before[p.name] = p.restarts
            result = ops.exec_in(conn, self.namespace, p.name, self.kube.container_of(p),
                                 ["sh", "-c", f"kill -TERM {int(found[p.name].pid)}"])
            if not result.ok:
                self.note("sigterm failed", f"{p.name}: {result.detail}")
                continue
            self.procs[p.name] = found[p.name]
            self.died(p)
            self.note("sigterm", p.name)
