"""Faults on the path to a dependency, on Kubernetes: Chaos Mesh's NetworkChaos when it is
installed, the documented fallback when there is one, and a clear refusal otherwise —
the plan and the figures say which mechanism was used.

- dependency_latency: NetworkChaos (delay, jitter, bandwidth, loss for a stall) from the
  selected pods toward the dependency's host. No fallback.
- model_load_stall: the same toward the model store, then the chosen pods are deleted so
  their replacements must load through it. No fallback.
- pipeline_lag: `stop` scales the pipeline's Deployment to 0 and back (no Chaos Mesh
  needed); `slow_reads` delays the path to the feature store (NetworkChaos).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from faults.base import Landing
from faults.kubernetes.base import KubeFault
from faults.undo import step
from inferchaos.errors import UsageError
from targets.kubernetes import ops
from targets.kubernetes.connection import Connection
from targets.kubernetes.target import selector_pairs

CHAOS = ("chaos-mesh.org", "v1alpha1", "networkchaos")


def network_chaos(name: str, namespace: str, labels: dict[str, str], host: str, latency_ms: float = 0,
                  jitter_ms: float = 0, bandwidth_kbs: float | None = None, loss: bool = False) -> dict:
    """The NetworkChaos object: from the pods `labels` pick, toward `host`, until deleted."""
    spec: dict[str, Any] = {"mode": "all", "selector": {"namespaces": [namespace], "labelSelectors": labels},
                            "direction": "to", "externalTargets": [host]}
    if loss:
        spec |= {"action": "loss", "loss": {"loss": "100", "correlation": "100"}}
    elif bandwidth_kbs:
        spec |= {"action": "bandwidth", "bandwidth": {"rate": f"{int(bandwidth_kbs * 8)}kbps", "limit": 20971520,
                                                      "buffer": 10000}}
    else:
        spec |= {"action": "delay", "delay": {"latency": f"{int(latency_ms)}ms", "jitter": f"{int(jitter_ms)}ms"}}
    return {"apiVersion": "chaos-mesh.org/v1alpha1", "kind": "NetworkChaos",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "inferchaos"}},
            "spec": spec}


@dataclass
class _NetworkFault(KubeFault):
    mechanism: str = field(default="", init=False)
    chaos_name: str | None = field(default=None, init=False)

    def host(self, dependency: str) -> str:
        host = self.kube.settings.dependencies.get(dependency)
        if not host:
            raise UsageError(f"{self.name} on Kubernetes needs the {dependency} host: give "
                             f"--dependency {dependency}=<host, e.g. {dependency.replace('_', '-')}.svc>")
        return host

    def chaos_mesh(self) -> bool:
        return ops.has_custom(Connection(**self.conn), CHAOS[0], CHAOS[1], self.namespace, CHAOS[2])

    def apply_chaos(self, host: str, **shape: Any) -> None:
        if not self.chaos_mesh():
            raise UsageError(f"{self.name}: Chaos Mesh (networkchaos.chaos-mesh.org) is not installed in "
                             f"{self.namespace}, and this fault has no fallback; install Chaos Mesh")
        self.chaos_name = f"inferchaos-{self.name.replace('_', '-')}-{uuid.uuid4().hex[:6]}"
        self.journal([step("kube_delete_custom", conn=self.conn, group=CHAOS[0], version=CHAOS[1],
                           namespace=self.namespace, plural=CHAOS[2], name=self.chaos_name)])
        body = network_chaos(self.chaos_name, self.namespace, selector_pairs(self.kube.selector), host, **shape)
        ops.create_custom(Connection(**self.conn), *CHAOS[:2], self.namespace, CHAOS[2], body)
        self.mechanism = f"Chaos Mesh NetworkChaos {self.chaos_name} ({body['spec']['action']} toward {host})"
        self.note("networkchaos", self.chaos_name)

    def figures(self) -> dict[str, Any]:
        return {"mechanism": self.mechanism}

    def chaos_landed(self) -> Landing:
        """The NetworkChaos was accepted by the API. Its status (AllInjected) is not read
        yet: that is the Kubernetes verification issue's."""
        if not self.chaos_name:
            return Landing(False, "no NetworkChaos was created")
        return Landing(True, f"NetworkChaos {self.chaos_name} created (injection status not read)")

    def landed(self) -> Landing:
        return self.chaos_landed()


@dataclass
class KubeDependencyLatency(_NetworkFault):
    name = "dependency_latency"
    dependency: str = "feature_store"
    latency_ms: float = 50.0
    jitter_ms: float = 0.0
    bandwidth_kbs: float | None = None
    stall_s: float = 0.0
    reset: bool = False

    def validate(self) -> None:
        if self.reset:
            raise UsageError("dependency_latency: reset is not available on Kubernetes (Chaos Mesh has no RST action)")

    def _plan(self) -> list[str]:
        return [f"NetworkChaos from pods {self.kube.selector} toward {self.dependency} "
                f"({self.kube.settings.dependencies.get(self.dependency, '<host not given>')}): "
                f"{'loss 100%' if self.stall_s else f'delay {self.latency_ms:g}±{self.jitter_ms:g} ms'}"
                + (f", bandwidth {self.bandwidth_kbs:g} KB/s" if self.bandwidth_kbs else "") + "; deleted on revert"]

    def _inject(self) -> None:
        self.apply_chaos(self.host(self.dependency), latency_ms=self.latency_ms, jitter_ms=self.jitter_ms,
                         bandwidth_kbs=self.bandwidth_kbs, loss=bool(self.stall_s))


@dataclass
class KubeModelLoadStall(_NetworkFault):
    name = "model_load_stall"
    stall_s: float = 5.0
    bandwidth_kbs: float | None = None
    latency_ms: float = 0.0

    def _plan(self) -> list[str]:
        how = "loss 100%" if self.stall_s else (f"bandwidth {self.bandwidth_kbs:g} KB/s" if self.bandwidth_kbs
                                               else f"delay {self.latency_ms:g} ms")
        return [f"NetworkChaos from pods {self.kube.selector} toward the model store "
                f"({self.kube.settings.dependencies.get('model_store', '<host not given>')}): {how}; then delete "
                + ", ".join(p.name for p in self.choose()) + " (grace 0) so the replacements load through it; "
                "the NetworkChaos is deleted on revert"]

    def _inject(self) -> None:
        self.apply_chaos(self.host("model_store"), latency_ms=self.latency_ms, bandwidth_kbs=self.bandwidth_kbs,
                         loss=bool(self.stall_s))
        self.victims = self.victims_or_fail()
        conn = Connection(**self.conn)
        for p in self.victims:
            self.died(p)
            ops.delete_pod(conn, self.namespace, p.name, 0)
            self.note("deleted", p.name)

    def landed(self) -> Landing:
        chaos = self.chaos_landed()
        pods = KubeFault.landed(self)
        return Landing(chaos.ok and pods.ok, f"{chaos.evidence}; {pods.evidence}")


@dataclass
class KubePipelineLag(_NetworkFault):
    name = "pipeline_lag"
    mode: str = "stop"
    read_latency_ms: float = 1000.0

    def validate(self) -> None:
        if self.mode not in ("stop", "slow_reads", "both"):
            raise UsageError(f"pipeline_lag: mode must be stop, slow_reads or both, got {self.mode!r}")

    def _plan(self) -> list[str]:
        lines = []
        if self.mode in ("stop", "both"):
            lines.append(f"scale Deployment {self.kube.settings.pipeline_deployment or '<--pipeline-deployment>'} "
                         "to 0 replicas; back to its count on revert")
        if self.mode in ("slow_reads", "both"):
            lines.append(f"NetworkChaos delay {self.read_latency_ms:g} ms toward the feature store "
                         f"({self.kube.settings.dependencies.get('feature_store', '<host not given>')})")
        return lines

    def _inject(self) -> None:
        used = []
        if self.mode in ("stop", "both"):
            deployment = self.kube.settings.pipeline_deployment
            if not deployment:
                raise UsageError("pipeline_lag on Kubernetes needs --pipeline-deployment NAME (the feature pipeline)")
            conn = Connection(**self.conn)
            before = ops.replicas_of(conn, self.namespace, deployment)
            self.journal([step("kube_scale", conn=self.conn, namespace=self.namespace, deployment=deployment,
                               replicas=before)])
            ops.scale(conn, self.namespace, deployment, 0)
            used.append(f"scaled Deployment {deployment} from {before} to 0")
            self.note("scaled to 0", deployment)
        if self.mode in ("slow_reads", "both"):
            self.apply_chaos(self.host("feature_store"), latency_ms=self.read_latency_ms)
            used.append(self.mechanism)
        self.mechanism = "; ".join(used)

    def landed(self) -> Landing:
        """The pipeline's Deployment reads back 0 replicas; the NetworkChaos was created."""
        seen = []
        if self.mode in ("stop", "both"):
            deployment = self.kube.settings.pipeline_deployment or ""
            now = ops.replicas_of(Connection(**self.conn), self.namespace, deployment)
            if now != 0:
                return Landing(False, f"Deployment {deployment} reads back {now} replicas, not 0")
            seen.append(f"Deployment {deployment} reads back 0 replicas")
        if self.mode in ("slow_reads", "both"):
            chaos = self.chaos_landed()
            if not chaos.ok:
                return chaos
            seen.append(chaos.evidence)
        return Landing(True, "; ".join(seen))
