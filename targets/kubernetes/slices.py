"""The data plane's view: which pods the Service's EndpointSlices route to.

kube-proxy, ingress controllers and meshes route by EndpointSlice conditions, not by pod
readiness as such: `ready` (route new traffic), `serving` (ready, whether terminating or
not) and `terminating`. A pod can be Ready in the API and still out of the slices (the
EndpointSlice controller is behind), or not Ready and still in them -- so the failover
probe reads this view; the pods' own readiness stays the API view beside it.

Slices are watched in the namespace; the Service is the one whose slices name most of the
selected pods (no flag to give). Until any slice names them (no Service selects them, or
the runner may not read slices), the view is the pods' readiness, and `source` says so.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass, field

from kubernetes import client

from inferchaos.targets.kubernetes.informer import Informer
from inferchaos.targets.kubernetes.pods import PodCache


@dataclass(frozen=True)
class Endpoint:
    name: str
    #: the pod's id in the pod cache (the LB view's key).
    port: int
    ready: bool
    serving: bool
    terminating: bool

    @property
    def state(self) -> str:
        if self.ready:
            return "running"
        return "stopping" if self.serving or self.terminating else "stopped"


@dataclass
class SliceCache:
    discovery: client.DiscoveryV1Api
    namespace: str
    pods: PodCache
    #: slice name -> (service, {pod: (ready, serving, terminating)})
    slices: dict[str, tuple[str, dict[str, tuple[bool, bool, bool]]]] = field(default_factory=dict)
    #: slice name -> {pod: (address, port)}: where kube-proxy sends the Service's traffic.
    addresses: dict[str, dict[str, tuple[str, int]]] = field(default_factory=dict)
    #: (service, pod) -> monotonic time its endpoint last went from ready to not (or away).
    went_out: dict[tuple[str, str], float] = field(default_factory=dict)
    #: the Service under load, once known: only its slices are the data plane's view.
    pinned: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _informer: Informer | None = None

    @property
    def readable(self) -> bool:
        """False while the runner may not read EndpointSlices (403): pod readiness is the view."""
        return not (self._informer and self._informer.forbidden)

    def start(self) -> SliceCache:
        """Listed in the background: a view that stays empty is a fallback, not a refusal."""
        self._informer = Informer(self.discovery.list_namespaced_endpoint_slice, (self.namespace,),
                                  on_change=self._apply, name="slice-watch").start(wait=False)
        return self

    def stop(self) -> None:
        if self._informer is not None:
            self._informer.stop()

    def _apply(self, kind: str, s: client.V1EndpointSlice) -> None:
        entry = _entry(s)
        with self._lock:
            before = self._ready_in(entry[0])
            if kind == "DELETED":
                self.slices.pop(s.metadata.name, None)
                self.addresses.pop(s.metadata.name, None)
            else:
                self.slices[s.metadata.name] = entry
                self.addresses[s.metadata.name] = _addresses(s)
            after, now = self._ready_in(entry[0]), time.monotonic()
            for pod, was in before.items():
                if was and not after.get(pod, False):
                    self.went_out[(entry[0], pod)] = now

    def _ready_in(self, service: str) -> dict[str, bool]:
        """Each pod's `ready` across the Service's slices (under the lock)."""
        return {pod: cond[0] for pod, cond in self._merged(service).items()}

    def _merged(self, service: str) -> dict[str, tuple[bool, bool, bool]]:
        """Each pod's conditions across the Service's slices (under the lock)."""
        merged: dict[str, tuple[bool, bool, bool]] = {}
        for svc, eps in self.slices.values():
            if svc == service:
                merged.update(eps)
        return merged

    def went_out_at(self, pod: str) -> float | None:
        """When (monotonic) the pod's endpoint last stopped being ready in the Service's slices
        (not ready, or gone from them): when the data plane was told to stop sending to it."""
        svc = self.service()
        with self._lock:
            return self.went_out.get((svc, pod)) if svc else None

    def service(self) -> str | None:
        """The Service the endpoint was tied to (KubeTarget.tie); before that, the one whose
        slices name most of the selected pods."""
        if self.pinned:  # until its slices are read (or if they may not be), pod readiness is the view
            with self._lock:
                seen = any(svc == self.pinned for svc, _ in self.slices.values())
            return self.pinned if self.readable and seen else None
        names = {p.name for p in self.pods.snapshot()[0]} | {p.name for p in self.pods.snapshot()[1]}
        counts: dict[str, int] = {}
        with self._lock:
            for svc, eps in self.slices.values():
                counts[svc] = counts.get(svc, 0) + len(names & set(eps))
        best = max(counts, key=lambda s: counts[s], default=None)
        return best if best and counts[best] else None

    def endpoints(self) -> dict[str, tuple[bool, bool, bool]] | None:
        svc = self.service()
        if svc is None:
            return None
        with self._lock:
            return self._merged(svc)

    def address(self, pod: str) -> tuple[str, int] | None:
        """The pod's address and port in the Service's slices: what the data plane dials."""
        svc = self.service()
        if svc is None:
            return None
        with self._lock:
            for name, (service, _) in self.slices.items():
                if service == svc and pod in self.addresses.get(name, {}):
                    return self.addresses[name][pod]
        return None


def _addresses(s: client.V1EndpointSlice) -> dict[str, tuple[str, int]]:
    """Each pod's first address with the slice's first TCP port (a Service with one port; with
    several, the one named http, as the serving port usually is)."""
    ports = [p for p in s.ports or [] if (p.protocol or "TCP") == "TCP" and p.port]
    port = next((p.port for p in ports if p.name == "http"), ports[0].port if ports else None)
    if port is None or not 0 < int(port) < 65536:
        return {}
    out = {}
    for e in s.endpoints or []:
        ref = e.target_ref
        if ref is not None and ref.kind == "Pod" and ref.name and e.addresses and _is_ip(e.addresses[0]):
            out[ref.name] = (e.addresses[0], int(port))
    return out


def _is_ip(text: str) -> bool:
    """A slice's address is input from the cluster: only an IP is ever dialled (an FQDN
    endpoint, or anything else, is no pod address)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _entry(s: client.V1EndpointSlice) -> tuple[str, dict[str, tuple[bool, bool, bool]]]:
    service = ((s.metadata.labels if s.metadata else None) or {}).get("kubernetes.io/service-name", "")
    eps: dict[str, tuple[bool, bool, bool]] = {}
    for e in s.endpoints or []:
        ref = e.target_ref
        if ref is None or ref.kind != "Pod" or not ref.name:
            continue
        c = e.conditions
        # the API's own defaults for an unset condition: ready/serving unknown -> true, terminating -> false
        ready = True if c is None or c.ready is None else bool(c.ready)
        serving = ready if c is None or c.serving is None else bool(c.serving)
        terminating = False if c is None or c.terminating is None else bool(c.terminating)
        eps[ref.name] = (ready, serving, terminating)
    return service, eps
