"""Kubernetes' EndpointSlice controller for one Service, on the fake's store: what kube-proxy and
meshes follow (the data plane follows EndpointSlice conditions, not pod readiness).

    with EndpointSliceController(fake, "ml", "ref", {"app": "ref"}, port=8000) as slices:
        wait_for(lambda: slices.endpoint("ref-001")["conditions"]["ready"])

Read from github.com/kubernetes/endpointslice (the staging repo of
kubernetes/pkg/controller/endpointslice; master, 2026-07):
- utils.go podToEndpoint: serving = pod Ready condition True; terminating = deletionTimestamp set;
  ready = publishNotReadyAddresses || (serving && !terminating); targetRef {kind Pod, namespace,
  name, uid}; nodeName when set; zone from the Node's topology.kubernetes.io/zone label; hostname
  when spec.hostname is set and spec.subdomain is the Service's name.
- utils.go getEndpointAddresses: addresses from status.podIPs of the slice's family (IPv4 here);
  getEndpointPorts: one {name, port, protocol} per Service port; newEndpointSlice: generateName
  "SERVICE-", a controller ownerReference to the Service; setEndpointSliceLabels: the Service's
  labels plus kubernetes.io/service-name and endpointslice.kubernetes.io/managed-by =
  endpointslice-controller.k8s.io (service.kubernetes.io/headless for clusterIP None).
- util/controller_utils.go ShouldPodBeInEndpoints(pod, includeTerminating=true) as reconciler.go
  calls it: no terminal pods (Succeeded / Failed), no pods without an IP; terminating pods stay,
  with ready false. reconciler.go also skips a pod whose Node does not exist (unless
  publishNotReadyAddresses), drops an endpoint with no address, and keeps a placeholder slice
  (no ports, no endpoints) when the Service has no endpoints at all.
- The batch period is kube-controller-manager's --endpointslice-updates-batch-period
  (EndpointSliceControllerConfiguration.EndpointUpdatesBatchPeriod, "Default 0 value means that
  each pod update triggers an endpoint update"; pkg.go.dev k8s.io/kubernetes/pkg/controller/
  endpointslice/config). `batch_period_s` models it; kube-proxy and meshes add their own delay.

Not modelled: slices of more than maxEndpointsPerSlice (100) endpoints, topology hints /
trafficDistribution, the endpoints.kubernetes.io/last-change-trigger-time annotation, IPv6, named
targetPorts.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

from tests.fakekube.apiserver import FakeKube
from tests.fakekube.controller import Controller
from tests.fakekube.store import NotFound, Resource

DISCOVERY = ("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice")
SERVICE_NAME = "kubernetes.io/service-name"
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
CONTROLLER_NAME = "endpointslice-controller.k8s.io"
HEADLESS = "service.kubernetes.io/headless"
ZONE = "topology.kubernetes.io/zone"
RESERVED = (SERVICE_NAME, MANAGED_BY, HEADLESS)


def is_pod_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def pod_ips(pod: dict[str, Any]) -> list[str]:
    """status.podIPs; a pod written with podIP only gets podIPs from the API server's v1
    conversion, which keeps the two in step, so fall back to podIP."""
    status = pod.get("status") or {}
    listed = [p.get("ip", "") for p in status.get("podIPs") or []]
    return [ip for ip in listed if ip] or ([status["podIP"]] if status.get("podIP") else [])


def should_be_in_endpoints(pod: dict[str, Any]) -> bool:
    """ShouldPodBeInEndpoints(pod, includeTerminating=true)."""
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return False
    return bool(status.get("podIP") or status.get("podIPs"))


def pod_to_endpoint(pod: dict[str, Any], node: dict[str, Any] | None, service_name: str,
                    publish_not_ready: bool) -> dict[str, Any]:
    """podToEndpoint for addressType IPv4."""
    meta, spec = pod["metadata"], pod.get("spec") or {}
    serving = is_pod_ready(pod)
    terminating = meta.get("deletionTimestamp") is not None
    ready = publish_not_ready or (serving and not terminating)
    addresses = []
    for ip in pod_ips(pod):
        try:
            parsed = ipaddress.ip_address(ip)
        except ValueError:
            continue
        if parsed.version == 4:
            addresses.append(str(parsed))
    endpoint: dict[str, Any] = {
        "addresses": addresses,
        "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
        "targetRef": {"kind": "Pod", "namespace": meta.get("namespace", ""), "name": meta["name"],
                      "uid": meta.get("uid", "")},
    }
    if spec.get("nodeName"):
        endpoint["nodeName"] = spec["nodeName"]
    zone = ((node or {}).get("metadata") or {}).get("labels", {}).get(ZONE)
    if zone:
        endpoint["zone"] = zone
    if spec.get("hostname") and spec.get("subdomain") == service_name:
        endpoint["hostname"] = spec["hostname"]
    return endpoint


class EndpointSliceController(Controller):
    """Keeps discovery.k8s.io/v1 EndpointSlices for one Service whose pods `selector` picks.

    The Service object itself is optional: when it is in the store, its uid, labels, clusterIP
    (headless) and spec.publishNotReadyAddresses are used, as the real controller does."""

    def __init__(self, fake: FakeKube, namespace: str, service: str, selector: dict[str, str], port: int,
                 port_name: str = "", protocol: str = "TCP", batch_period_s: float = 0.0, tick_s: float = 0.05,
                 publish_not_ready_addresses: bool | None = None) -> None:
        super().__init__(fake, tick_s)
        self.thread_name = f"fake-endpointslices-{service}"
        self.namespace, self.service, self.selector = namespace, service, dict(selector)
        self.port, self.port_name, self.protocol = port, port_name, protocol
        self.batch_period_s = batch_period_s
        self.publish_not_ready_addresses = publish_not_ready_addresses
        self.resource: Resource = self.store.resource(*DISCOVERY)  # registers it when missing
        self._pending_since: float | None = None

    # ------------------------------------------------------------------ what tests read
    def slices(self) -> list[dict[str, Any]]:
        items, _ = self.store.list(self.resource, self.namespace, self._owned)
        return items

    def endpoints(self) -> list[dict[str, Any]]:
        return [ep for s in self.slices() for ep in s.get("endpoints") or []]

    def endpoint(self, pod: str) -> dict[str, Any] | None:
        return next((ep for ep in self.endpoints() if (ep.get("targetRef") or {}).get("name") == pod), None)

    # ------------------------------------------------------------------ the loop
    def tick(self) -> None:
        self.reconcile()

    def reconcile(self, force: bool = False) -> bool:
        """Bring the slices to the desired state; True when something was written. A difference
        waits `batch_period_s` from when it was first seen (unless `force`)."""
        service = self._service()
        desired = self._desired(service)
        existing = self.slices()
        same_ports = [s for s in existing if (s.get("ports") or []) == desired["ports"]]
        keep = same_ports[0] if same_ports else None
        stale = [s for s in existing if s is not keep]
        if keep is not None and not stale and _same(keep, desired):
            self._pending_since = None
            return False
        now = time.monotonic()
        if self._pending_since is None:
            self._pending_since = now
        if not force and now - self._pending_since < self.batch_period_s:
            return False
        self._pending_since = None
        if keep is None:
            self.store.create(self.resource, self.namespace, desired)
        elif not _same(keep, desired):
            def change(current: dict[str, Any]) -> dict[str, Any]:
                current["metadata"]["labels"] = desired["metadata"]["labels"]
                current["metadata"]["ownerReferences"] = desired["metadata"].get("ownerReferences", [])
                current.update(addressType="IPv4", ports=desired["ports"], endpoints=desired["endpoints"])
                return current

            self.store.update(self.resource, self.namespace, keep["metadata"]["name"], change)
        for s in stale:
            try:
                self.store.delete(self.resource, self.namespace, s["metadata"]["name"])
            except NotFound:
                pass
        return True

    # ------------------------------------------------------------------ pieces
    def _owned(self, s: dict[str, Any]) -> bool:
        labels = (s.get("metadata") or {}).get("labels") or {}
        return labels.get(SERVICE_NAME) == self.service and labels.get(MANAGED_BY) == CONTROLLER_NAME

    def _service(self) -> dict[str, Any] | None:
        try:
            return self.store.get(self.store.resource("", "v1", "services"), self.namespace, self.service)
        except NotFound:
            return None

    def _publish_not_ready(self, service: dict[str, Any] | None) -> bool:
        if self.publish_not_ready_addresses is not None:
            return self.publish_not_ready_addresses
        return bool(((service or {}).get("spec") or {}).get("publishNotReadyAddresses"))

    def _node(self, name: str | None) -> dict[str, Any] | None:
        if not name:
            return None
        try:
            return self.store.get(self.store.resource("", "v1", "nodes"), "", name)
        except NotFound:
            return None

    def _desired(self, service: dict[str, Any] | None) -> dict[str, Any]:
        publish = self._publish_not_ready(service)
        pods, _ = self.store.list(self.store.resource("", "v1", "pods"), self.namespace, self._selected)
        members, endpoints = False, []
        for pod in pods:
            if not should_be_in_endpoints(pod):
                continue
            members = True  # its port map exists even when the pod is then skipped
            node = self._node((pod.get("spec") or {}).get("nodeName"))
            if node is None and not publish:
                continue  # "skipping Pod for Service, Node not found"
            endpoint = pod_to_endpoint(pod, node, self.service, publish)
            if endpoint["addresses"]:
                endpoints.append(endpoint)
        endpoints.sort(key=lambda ep: ep["targetRef"]["name"])
        ports = [{"name": self.port_name, "port": self.port, "protocol": self.protocol}] if members else []
        return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": self._meta(service), "addressType": "IPv4", "ports": ports, "endpoints": endpoints}

    def _selected(self, pod: dict[str, Any]) -> bool:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        return bool(self.selector) and all(labels.get(k) == v for k, v in self.selector.items())

    def _meta(self, service: dict[str, Any] | None) -> dict[str, Any]:
        labels = {k: v for k, v in ((service or {}).get("metadata") or {}).get("labels", {}).items()
                  if k not in RESERVED}
        if service is not None and (service.get("spec") or {}).get("clusterIP") == "None":
            labels[HEADLESS] = ""
        labels.update({SERVICE_NAME: self.service, MANAGED_BY: CONTROLLER_NAME})
        meta: dict[str, Any] = {"generateName": f"{self.service}-", "namespace": self.namespace, "labels": labels}
        if service is not None:
            meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Service", "name": self.service,
                                        "uid": service["metadata"].get("uid", ""), "controller": True,
                                        "blockOwnerDeletion": True}]
        return meta


def _same(current: dict[str, Any], desired: dict[str, Any]) -> bool:
    meta, want = current.get("metadata") or {}, desired["metadata"]
    return ((current.get("endpoints") or []) == desired["endpoints"]
            and (current.get("ports") or []) == desired["ports"]
            and (meta.get("labels") or {}) == want["labels"]
            and (meta.get("ownerReferences") or []) == want.get("ownerReferences", []))
