"""`KubeTarget`: a namespace's inference pods, as the engine sees any target.

Replicas are the pods `--selector` picks, read through a watch; the load balancer's view
is their readiness (a Service routes to Ready pods only); the endpoint under test is the
URL given. Steady state: as many Ready pods as the workloads ask for, none terminating.
"""

from __future__ import annotations

import dataclasses
import uuid
import time

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from inferchaos.ground.errors import InferchaosError, TargetError, UsageError
from inferchaos.targets import capabilities as caps
from inferchaos.targets.kubernetes.connection import Connection
from inferchaos.targets.kubernetes.pods import PodCache, PodView
from inferchaos.targets.kubernetes.identity import ClusterIdentity, check_identity, read_identity
from inferchaos.targets.kubernetes.service import tie
from inferchaos.targets.kubernetes.slices import Endpoint, SliceCache
from inferchaos.targets.kubernetes.settings import OPT_IN_LABEL, KubeSettings
from inferchaos.targets.kubernetes.workloads import Workloads


class KubeTarget:
    kind = "kubernetes"

    def __init__(self, settings: KubeSettings, connection: Connection | None = None) -> None:
        self.settings = settings.validate()
        self.connection = connection or Connection.resolve(settings.kubeconfig, settings.context)
        self.api = self.connection.api_client()
        #: read first, before any other request (start()).
        self.identity: ClusterIdentity | None = None
        self.core, self.apps = client.CoreV1Api(self.api), client.AppsV1Api(self.api)
        self.namespace, self.selector = settings.namespace, settings.selector
        self.cache = PodCache(self.core, self.namespace, self.selector)
        self.slices = SliceCache(client.DiscoveryV1Api(self.api), self.namespace, self.cache)
        self.workloads = Workloads(self.api, self.namespace, self.selector)
        self._started = False
        self._desired: int | None = None
        #: the Service under load (tie()).
        self.service: str | None = None
        #: why the last read of the desired replicas failed mid-run (the count kept is the one before).
        self.desired_error: str | None = None
        #: names this process's ledger in the cluster (targets.kubernetes.runledger).
        self.run_id = uuid.uuid4().hex[:10]

    # ------------------------------------------------------------------ life
    def start(self) -> KubeTarget:
        """Pin the cluster by identity (the first request), check the namespace opted in and
        the selector picks something; then keep the pods current."""
        try:
            self.identity = read_identity(self.api, self.connection.context)
            check_identity(self.identity, self.settings.allow_clusters, self.connection.context)
        except Exception:
            self.api.close()
            raise
        self.connection = dataclasses.replace(self.connection, cluster=self.identity.uid)
        try:
            ns = self.core.read_namespace(self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise UsageError(f"namespace {self.namespace} does not exist in context "
                                 f"{self.connection.context}") from None
            raise TargetError(f"the API server refused to read namespace {self.namespace}: "
                              f"{exc.status} {exc.reason}") from None
        except (Urllib3Error, OSError) as exc:
            raise UsageError(f"cannot reach the API server of context {self.connection.context}: {exc}") from None
        if ((ns.metadata.labels if ns.metadata else None) or {}).get(OPT_IN_LABEL) != "true":
            raise UsageError(f"namespace {self.namespace} has not opted in to chaos: its owners label it "
                             f"{OPT_IN_LABEL}=true (kubectl label namespace {self.namespace} {OPT_IN_LABEL}=true)")
        self._started = True
        try:
            self.cache.start()
            self.slices.start()
            self.workloads.start()
            pods, _ = self.cache.snapshot()
            if not pods:
                raise UsageError(f"--selector {self.selector} matches no pod in namespace {self.namespace}")
            self.desired_replicas()
        except Exception:
            self.close()
            raise
        return self

    def tie(self) -> KubeTarget:
        """Hold the endpoint to the pods: the Service it reaches must route to exactly the
        pods the selector picks (targets.kubernetes.service). Runs that load the endpoint
        call it after start(); from then on only that Service's slices are the LB view."""
        self.service = tie(self.core, self.namespace, self.lb_url, self.settings.service, self.selector,
                           {p.name for p in self.replicas()})
        self.slices.pinned = self.service
        return self

    def close(self) -> None:
        if self._started:
            self.cache.stop()
            self.slices.stop()
            self.workloads.stop()
            self._started = False
        self.api.close()

    def __enter__(self) -> KubeTarget:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the Target protocol
    @property
    def lb_url(self) -> str:
        return self.settings.endpoint.rstrip("/")

    @property
    def prometheus_url(self) -> str | None:
        return None

    def pods(self) -> list[PodView]:
        return self.cache.snapshot()[0]

    def replicas(self) -> list[PodView]:
        return [p for p in self.pods() if p.phase != "dead"]

    def replica_records(self) -> list[PodView]:
        alive, gone = self.cache.snapshot()
        return alive + gone

    def lb_source(self) -> KubeTarget:
        return self

    def servers(self) -> list:
        """The LB view: the data plane's (the Service's EndpointSlices) when a slice names the
        pods, else their readiness (a Service routes to Ready pods); a deleted pod is out for good."""
        endpoints = self.slices.endpoints()
        records = self.replica_records()
        if endpoints is None:
            return records
        return [Endpoint(p.name, p.port, *endpoints.get(p.name, (False, False, False))) for p in records]

    def address_of(self, pod: str) -> tuple[str, int] | None:
        """Where the data plane reaches the pod: its address and port in the Service's slices."""
        return self.slices.address(pod)

    def went_out_at(self, pod: str) -> float | None:
        """When (monotonic) the Service's slices last took the pod out of rotation."""
        return self.slices.went_out_at(pod)

    def lb_view(self) -> str:
        """Whose view the failover figures are: said in the report beside them."""
        svc = self.slices.service()
        if svc:
            return f"EndpointSlices of Service {svc} (conditions ready/serving/terminating)"
        why = "the runner may not read EndpointSlices" if not self.slices.readable else \
            "no EndpointSlice names these pods"
        return f"pod readiness ({why})"

    def desired_replicas(self) -> int:
        """What the Deployments/StatefulSets whose pod template the selector picks ask for
        (an HPA or a KEDA ScaledObject writes its count there), from their watch. At start a
        selector that picks no workload's pods is refused; during a run a workload gone, or
        a watch failing, keeps the count last read (`desired_error` says why), never a guess
        from the pods there are (a fleet one replica short would call itself steady)."""
        try:
            self._desired, self.desired_error = self.workloads.desired(), self.workloads.error
        except InferchaosError as exc:  # the workload gone mid-run
            if self._desired is None:
                raise
            self.desired_error = str(exc)
        return self._desired

    def unsteady(self) -> str | None:
        pods, desired = self.pods(), self.desired_replicas()
        dying = [p.name for p in pods if p.phase == "dead"]
        if dying:
            return "terminating: " + ", ".join(dying)
        ready = [p for p in pods if p.phase == "ready"]
        if len(ready) < desired:
            starting = [p.name for p in pods if p.phase == "starting"]
            return f"{len(ready)}/{desired} pods ready" + (f" (starting: {', '.join(starting)})" if starting else "")
        return None

    def wait_steady(self, timeout_s: float = 300.0) -> None:
        deadline = time.monotonic() + timeout_s
        while (why := self.unsteady()) is not None:
            if time.monotonic() > deadline:
                raise TargetError(f"namespace {self.namespace} did not reach its steady state in {timeout_s:g}s: {why}")
            time.sleep(0.25)

    def metrics_urls(self) -> dict[str, str]:
        port = self.settings.metrics_port
        if not port:
            return {}
        return {p.name: f"http://{p.ip}:{port}/metrics" for p in self.pods() if p.phase == "ready" and p.ip}

    def golden_model(self) -> str | None:
        return self.settings.golden_model

    def capabilities(self) -> frozenset[str]:
        """No GPU: NVML in the runner's pod sees no node's GPU (read DCGM exporter metrics
        through --prometheus instead); metrics only with --metrics-port."""
        has = {caps.LB_SLOTS, caps.AUTOSCALER}
        has |= {caps.METRICS} if self.settings.metrics_port else set()
        return frozenset(has | ({caps.GOLDEN_SET} if self.golden_model() else set()))

    def autoscaling(self) -> dict:
        """The HPA of the selected pods' workload, KEDA's ScaledObject where there is one
        (targets.kubernetes.workloads), with the pods ready."""
        ready = sum(p.phase == "ready" for p in self.pods())
        return {**self.workloads.autoscaling(), "ready": ready}

    # ------------------------------------------------------------------ for faults
    def pod(self, name: str) -> client.V1Pod:
        return self.core.read_namespaced_pod(name, self.namespace)

    def container_of(self, pod: PodView) -> str:
        if self.settings.container:
            return self.settings.container
        if not pod.containers:
            raise TargetError(f"pod {pod.name} has no containers")
        return pod.containers[0]

    def describe(self) -> str:
        cluster = f" (cluster {self.identity})" if self.identity else ""
        return f"context {self.connection.context}{cluster}, namespace {self.namespace}, pods {self.selector}"
