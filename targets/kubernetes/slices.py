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

import threading
from dataclasses import dataclass, field

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

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
    timeout_s: int = 30
    #: slice name -> (service, {pod: (ready, serving, terminating)})
    slices: dict[str, tuple[str, dict[str, tuple[bool, bool, bool]]]] = field(default_factory=dict)
    readable: bool = True
    #: the Service under load, once known: only its slices are the data plane's view.
    pinned: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> SliceCache:
        self._thread = threading.Thread(target=self._run, name="slice-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout_s + 5)

    def _run(self) -> None:
        rv = ""
        while not self._stop.is_set():
            try:
                if not rv:
                    listed = self.discovery.list_namespaced_endpoint_slice(self.namespace)
                    with self._lock:
                        self.slices = {s.metadata.name: _entry(s) for s in listed.items}
                    rv = listed.metadata.resource_version
                for event in watch.Watch().stream(self.discovery.list_namespaced_endpoint_slice, self.namespace,
                                                  resource_version=rv, timeout_seconds=5,
                                                  _request_timeout=self.timeout_s + 5):
                    s = event["object"]
                    rv = s.metadata.resource_version or rv
                    with self._lock:
                        if event["type"] == "DELETED":
                            self.slices.pop(s.metadata.name, None)
                        else:
                            self.slices[s.metadata.name] = _entry(s)
                    if self._stop.is_set():
                        break
            except ApiException as exc:
                if exc.status == 403:
                    self.readable = False
                    return  # not allowed to read slices: the pods' readiness is the view
                rv = "" if exc.status == 410 else rv
                self._stop.wait(0.5 if exc.status == 410 else 1.0)
            except (Urllib3Error, OSError, ValueError):
                self._stop.wait(1.0)

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
        merged: dict[str, tuple[bool, bool, bool]] = {}
        with self._lock:
            for name, eps in self.slices.values():
                if name == svc:
                    merged.update(eps)
        return merged


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
