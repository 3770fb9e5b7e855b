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

import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from inferchaos.faults.base import Landing
from inferchaos.faults.kubernetes.base import KubeFault
from inferchaos.faults.kubernetes.pods import KubeReplicaCrash
from inferchaos.faults.registry import executes
from inferchaos.faults.undo import step
from inferchaos.ground.errors import UsageError
from inferchaos.targets.kubernetes import ops
from inferchaos.targets.kubernetes.nodes import EXPIRES, RUN, iso
from inferchaos.targets.kubernetes.sweep import RESTORE

CHAOS = ("chaos-mesh.org", "v1alpha1", "networkchaos")


def network_chaos(name: str, namespace: str, pods: list[str], host: str | None, duration_s: int, run: str,
                  expires_at: str, latency_ms: float = 0, jitter_ms: float = 0, bandwidth_kbs: float | None = None,
                  loss: bool = False, to_pods: list[str] | None = None) -> dict:
    """The NetworkChaos object: from exactly the named pods (never a label selector: what it
    picks changes under us), toward `host`, or toward exactly the pods `to_pods` names (a
    `target` selector: tc filters the sources' egress by those pods' IPs), or else all their
    egress, for `duration_s`.

    Chaos Mesh passes a bandwidth `rate` to tc, where `kbps` is kilobytes per second (kbit
    is kilobits): KB/s go out as kbps, unconverted."""
    spec: dict[str, Any] = {"mode": "all", "selector": {"pods": {namespace: sorted(pods)}},
                            "direction": "to", "duration": f"{int(duration_s)}s"}
    if host:
        spec["externalTargets"] = [host]
    if to_pods:
        spec["target"] = {"mode": "all", "selector": {"pods": {namespace: sorted(to_pods)}}}
    if loss:
        spec |= {"action": "loss", "loss": {"loss": "100", "correlation": "100"}}
    elif bandwidth_kbs:
        spec |= {"action": "bandwidth", "bandwidth": {"rate": f"{max(1, round(bandwidth_kbs))}kbps",
                                                      "limit": 20971520, "buffer": 10000}}
    else:
        spec |= {"action": "delay", "delay": {"latency": f"{int(latency_ms)}ms", "jitter": f"{int(jitter_ms)}ms"}}
    return {"apiVersion": "chaos-mesh.org/v1alpha1", "kind": "NetworkChaos",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/managed-by": "inferchaos"},
                         "annotations": {RUN: run, EXPIRES: expires_at}},
            "spec": spec}


def injected(obj: dict, wanted: list[str]) -> Landing:
    """Chaos Mesh's own account, held to what was asked: AllInjected True *and* every pod
    named in the chaos among those it injected. Chaos Mesh skips a named pod that does not
    exist ("pod is not found, skip it") and still says AllInjected of the rest, so the
    condition alone can call a chaos on fewer pods -- even none asked for -- landed."""
    status = obj.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    records = (status.get("experiment") or {}).get("containerRecords") or []
    pods = sorted({str(r.get("id", "?")).split("/")[-1] for r in records if r.get("phase") == "Injected"})
    name = obj["metadata"]["name"]
    if conditions.get("AllInjected") != "True":
        shown = ", ".join(f"{k}={v}" for k, v in conditions.items()) or "no status yet"
        return Landing(False, f"NetworkChaos {name} not injected ({shown}; records: {len(records)})")
    missing = sorted(set(wanted) - set(pods))
    if missing:
        return Landing(False, f"NetworkChaos {name} says AllInjected, but into {', '.join(pods) or 'no pod'}: "
                              f"not into {', '.join(missing)} (Chaos Mesh skips named pods it cannot find)")
    return Landing(True, f"NetworkChaos {name} AllInjected into {', '.join(pods)}")


@dataclass
class _NetworkFault(KubeFault):
    mechanism: str = field(default="", init=False)
    chaos_name: str | None = field(default=None, init=False)
    #: the pods the chaos names: what its status must say it injected.
    chaos_pods: list[str] = field(default_factory=list, init=False)
    #: Chaos Mesh reconciles, selects, then injects through its daemon on the node (seconds).
    land_within_s = 15.0  # type: ignore[misc]

    def host(self, dependency: str) -> str:
        host = self.kube.settings.dependencies.get(dependency)
        if not host:
            raise UsageError(f"{self.name} on Kubernetes needs the {dependency} host: give "
                             f"--dependency {dependency}=<host, e.g. {dependency.replace('_', '-')}.svc>")
        # Chaos Mesh resolves externalTargets in its controller's namespace, not the pods':
        # a bare Service name would never resolve there, and the chaos never be injected
        return host if "." in host else f"{host}.{self.namespace}.svc"

    def chaos_mesh(self) -> bool:
        return ops.has_custom(self.kube.connection, CHAOS[0], CHAOS[1], self.namespace, CHAOS[2])

    def apply_chaos(self, pods: list[str], host: str | None, duration_s: int | None = None, **shape: Any) -> None:
        if not self.chaos_mesh():
            raise UsageError(f"{self.name}: Chaos Mesh (networkchaos.chaos-mesh.org) is not installed in "
                             f"{self.namespace}, and this fault has no fallback; install Chaos Mesh")
        if not pods:
            raise UsageError(f"{self.name}: no pod to put the NetworkChaos on")
        self.chaos_name = f"inferchaos-{self.name.replace('_', '-')}-{uuid.uuid4().hex[:6]}"
        self.chaos_pods = sorted(pods)
        self.journal([step("kube_delete_custom", conn=self.conn, group=CHAOS[0], version=CHAOS[1],
                           namespace=self.namespace, plural=CHAOS[2], name=self.chaos_name, run=self.run_id)])
        body = network_chaos(self.chaos_name, self.namespace, pods, host,
                             min(duration_s or self.kube.settings.expire_after_s, self.kube.settings.expire_after_s),
                             self.run_id, iso(self.expires_at()), **shape)
        ops.create_custom(self.kube.connection, *CHAOS[:2], self.namespace, CHAOS[2], body)
        to_pods = shape.get("to_pods")
        toward = f"toward {host}" if host else (f"toward pods {', '.join(sorted(to_pods))}" if to_pods
                                                 else "on all their egress")
        self.mechanism = (f"Chaos Mesh NetworkChaos {self.chaos_name} ({body['spec']['action']} from "
                          f"{', '.join(sorted(pods))} {toward}, duration {body['spec']['duration']})")
        self.note("networkchaos", self.chaos_name)

    def serving(self) -> list[str]:
        """A dependency's path is every replica's: the chaos names each Ready pod."""
        return sorted(p.name for p in self.kube.replicas() if p.phase == "ready")

    def within_radius(self) -> list[str]:
        """The first Ready pods by name, as many as `replicas` says. A slow path takes no pod
        out of service, so all of them may be named (the radius keeps none back)."""
        ready = self.serving()
        return ready[:self.radius.resolve(len(ready), "Ready pods", keep_at_least=0)]

    def figures(self) -> dict[str, Any]:
        return {"mechanism": self.mechanism}

    def chaos_landed(self) -> Landing:
        if not self.chaos_name:
            return Landing(False, "no NetworkChaos was created")
        obj = ops.get_custom(self.kube.connection, *CHAOS[:2], self.namespace, CHAOS[2], self.chaos_name)
        if obj is None:
            return Landing(False, f"NetworkChaos {self.chaos_name} is gone")
        return injected(obj, self.chaos_pods)

    def landed(self) -> Landing:
        return self.chaos_landed()


@executes("dependency_latency", "kubernetes")
@dataclass
class KubeDependencyLatency(_NetworkFault):

    def _plan(self) -> list[str]:
        return [f"NetworkChaos from the Ready pods {', '.join(self.within_radius())} (replicas {self.radius}) toward "
                f"{self.args.dependency} "
                f"({self.kube.settings.dependencies.get(self.args.dependency, '<host not given>')}): "
                f"{'loss 100%' if self.args.stall_s else f'delay {self.args.latency_ms:g}±{self.args.jitter_ms:g} ms'}"
                + (f", bandwidth {self.args.bandwidth_kbs:g} KB/s" if self.args.bandwidth_kbs else "") + "; deleted on revert"]

    def _inject(self) -> None:
        self.apply_chaos(self.within_radius(), self.host(self.args.dependency), latency_ms=self.args.latency_ms, jitter_ms=self.args.jitter_ms,
                         bandwidth_kbs=self.args.bandwidth_kbs, loss=bool(self.args.stall_s))


@executes("model_load_stall", "kubernetes")
@dataclass
class KubeModelLoadStall(_NetworkFault):
    """The store side, toward the victims only: Chaos Mesh injects only into pods that exist
    when the chaos is created, so a NetworkChaos on the inference pods would miss the
    replacement that loads. The model store's pods exist already: their traffic *to the
    chosen pods* (a `target` selector: the victims' IPs, which a container restart keeps) is
    stalled (100% loss for `stall_s`, then Chaos Mesh ends it), delayed or throttled; once
    Chaos Mesh says it is in, the victims' servers are killed, and their restarted containers
    load through it. Every other client of the store -- the other replicas, its readiness
    probe -- is answered as before."""

    store_pods: list[str] = field(default_factory=list, init=False)
    crash: KubeReplicaCrash | None = field(default=None, init=False, repr=False)
    #: Chaos Mesh reconciles and injects through its daemons before the kill: up to this long.
    chaos_within_s: float = field(default=15.0, init=False, repr=False)

    def _store(self) -> list[str]:
        host = self.host("model_store")
        service, _, rest = host.partition(".")
        ns = rest.split(".")[0] if rest else self.namespace
        if ns != self.namespace:
            raise UsageError(f"model_load_stall: the model store {host} is in namespace {ns}, not {self.namespace}: "
                             "its pods are outside the blast radius")
        pods = ops.service_pods(self.kube.connection, self.namespace, service)
        if not pods:
            raise UsageError(f"model_load_stall: Service {service} in {self.namespace} selects no running pod")
        return pods

    def _how(self) -> str:
        if self.args.stall_s:
            return "loss 100% " + ("until revert" if math.isinf(self.args.stall_s) else f"for {self.args.stall_s:g} s")
        return f"bandwidth {self.args.bandwidth_kbs:g} KB/s" if self.args.bandwidth_kbs \
            else f"delay {self.args.latency_ms:g} ms"

    def _duration_s(self) -> int | None:
        """A stall ends by itself after stall_s (Chaos Mesh's duration); the rest at revert."""
        stall = self.args.stall_s
        return max(1, math.ceil(stall)) if stall and not math.isinf(stall) else None

    def _plan(self) -> list[str]:
        victims = [p.name for p in self.choose()]
        return [f"NetworkChaos on the model store's pods ({', '.join(self._store())}) toward "
                f"{', '.join(victims)} only: {self._how()}; then SIGKILL the server in {', '.join(victims)} "
                "so its restarted container loads through it; the store answers everyone else as before; "
                "the NetworkChaos is deleted on revert"]

    def _inject(self) -> None:
        self.store_pods = self._store()
        self.crash = KubeReplicaCrash(spec=self.spec, target=self.target, args=self.args)
        self.crash._entry = self._entry  # journals into this fault's entry
        self.crash.victims = self.crash.victims_or_fail()
        victims = [v.name for v in self.crash.victims]
        self.apply_chaos(self.store_pods, None, duration_s=self._duration_s(), to_pods=victims,
                         latency_ms=self.args.latency_ms, bandwidth_kbs=self.args.bandwidth_kbs,
                         loss=bool(self.args.stall_s))
        deadline = time.monotonic() + self.chaos_within_s
        while not self.chaos_landed().ok and time.monotonic() < deadline:
            time.sleep(0.2)
        self.crash._inject()
        self.victims = self.crash.victims
        self._died = self.crash._died

    def landed(self) -> Landing:
        chaos = self.chaos_landed()
        restarted = self.crash.landed() if self.crash else Landing(False, "no replica was restarted")
        return Landing(chaos.ok and restarted.ok, f"{chaos.evidence}; {restarted.evidence}")

    def figures(self) -> dict[str, Any]:
        return {**super().figures(), **(self.crash.figures() if self.crash else {})}


@executes("pipeline_lag", "kubernetes")
@dataclass
class KubePipelineLag(_NetworkFault):

    def _plan(self) -> list[str]:
        lines = []
        if self.args.mode in ("stop", "both"):
            if self.kube.settings.pipeline_deployment:
                self.refuse_the_fleet(self.kube.settings.pipeline_deployment)
            lines.append(f"scale Deployment {self.kube.settings.pipeline_deployment or '<--pipeline-deployment>'} "
                         "to 0 replicas; back to its count on revert")
        if self.args.mode in ("slow_reads", "both"):
            lines.append(f"NetworkChaos delay {self.args.read_latency_ms:g} ms toward the feature store "
                         f"({self.kube.settings.dependencies.get('feature_store', '<host not given>')})")
        return lines

    def _inject(self) -> None:
        used = []
        if self.args.mode in ("stop", "both"):
            deployment = self.kube.settings.pipeline_deployment
            if not deployment:
                raise UsageError("pipeline_lag on Kubernetes needs --pipeline-deployment NAME (the feature pipeline)")
            conn = self.kube.connection
            self.refuse_the_fleet(deployment)
            before = ops.replicas_of(conn, self.namespace, deployment)
            self.journal([step("kube_scale", conn=self.conn, namespace=self.namespace, deployment=deployment,
                               replicas=before, run=self.run_id)])
            ops.annotate_deployment(conn, self.namespace, deployment, {
                RESTORE: str(before), EXPIRES: iso(self.expires_at()), RUN: self.run_id})
            ops.scale(conn, self.namespace, deployment, 0)
            used.append(f"scaled Deployment {deployment} from {before} to 0")
            self.note("scaled to 0", deployment)
        if self.args.mode in ("slow_reads", "both"):
            self.apply_chaos(self.serving(), self.host("feature_store"), latency_ms=self.args.read_latency_ms)
            used.append(self.mechanism)
        self.mechanism = "; ".join(used)

    def refuse_the_fleet(self, deployment: str) -> None:
        """The pipeline is not the fleet: a Deployment that selects every pod, or any pod
        `--selector` picks, is the serving one (or shares its pods), and scaling it to 0
        would take the endpoint down -- far more than a lagging pipeline. One line, exit 2."""
        selector, pods = ops.deployment_pods(self.kube.connection, self.namespace, deployment)
        serving = sorted({p.name for p in self.kube.replicas()} & set(pods))
        if serving or not selector:
            whose = f"selects {', '.join(serving)}, which --selector {self.kube.selector} picks" if serving \
                else "selects every pod in the namespace"
            raise UsageError(f"pipeline_lag: --pipeline-deployment {deployment} {whose}: scaling it to 0 would take "
                             "the pods under test, not the feature pipeline; name the pipeline's own Deployment")

    def landed(self) -> Landing:
        """The pipeline's Deployment reads back 0 replicas; the NetworkChaos was created."""
        seen = []
        if self.args.mode in ("stop", "both"):
            deployment = self.kube.settings.pipeline_deployment or ""
            now = ops.replicas_of(self.kube.connection, self.namespace, deployment)
            if now != 0:
                return Landing(False, f"Deployment {deployment} reads back {now} replicas, not 0")
            seen.append(f"Deployment {deployment} reads back 0 replicas")
        if self.args.mode in ("slow_reads", "both"):
            chaos = self.chaos_landed()
            if not chaos.ok:
                return chaos
            seen.append(chaos.evidence)
        return Landing(True, "; ".join(seen))
