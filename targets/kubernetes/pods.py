"""The pods a selector picks, kept current by a watch: what the engine calls replicas.

Sampling the API ten times a second (as the local target samples HAProxy) would load a
real API server; a watch keeps a cache instead, re-lists after 410 Expired, and remembers
the pods deleted during the run, since cold starts and failover are judged afterwards.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error


def _wall(ts: datetime | str | None) -> float | None:
    if ts is None:
        return None
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return ts.timestamp()


@dataclass
class PodView:
    """One pod, in the shape of `targets.base.Replica`."""

    name: str
    port: int
    phase: str  # starting | ready | dead
    started_at: float
    ready_at: float | None = None
    died_at: float | None = None
    exit_code: int | None = None
    node: str | None = None
    ip: str | None = None
    restarts: int = 0
    oom_killed: bool = False
    containers: tuple[str, ...] = ()
    slot: int | None = 1
    #: wall time a container of it last terminated (state or lastState.terminated.finishedAt):
    #: the kubelet's account of a death, not the time anyone asked for one.
    terminated_at: float | None = None

    @property
    def state(self) -> str:
        """As an LB server: a pod takes traffic from its Service only while Ready."""
        return "running" if self.phase == "ready" else "stopped"


def view(pod: client.V1Pod, port: int) -> PodView:
    meta, status, spec = pod.metadata, pod.status or client.V1PodStatus(), pod.spec
    ready_at = None
    for c in status.conditions or []:
        if c.type == "Ready" and c.status == "True":
            ready_at = _wall(c.last_transition_time) or time.time()
    statuses = status.container_statuses or []
    exit_code, oom, finished = None, False, None
    for cs in statuses:
        for state in (cs.state, cs.last_state):
            term = state.terminated if state else None
            if term is not None:
                exit_code = term.exit_code if exit_code is None else exit_code
                oom = oom or term.reason == "OOMKilled"
                at = _wall(term.finished_at)
                finished = at if finished is None or (at is not None and at > finished) else finished
    deleting = meta.deletion_timestamp is not None
    if deleting or status.phase in ("Failed", "Succeeded"):
        phase = "dead"
    else:
        phase = "ready" if ready_at is not None else "starting"
    return PodView(
        name=meta.name, port=port, phase=phase, started_at=_wall(meta.creation_timestamp) or time.time(),
        ready_at=ready_at, died_at=_wall(meta.deletion_timestamp) if deleting else None, exit_code=exit_code,
        node=spec.node_name if spec else None, ip=status.pod_ip, restarts=sum(cs.restart_count or 0 for cs in statuses),
        oom_killed=oom, terminated_at=finished, containers=tuple(c.name for c in (spec.containers if spec else [])),
    )


@dataclass
class PodCache:
    core: client.CoreV1Api
    namespace: str
    selector: str
    timeout_s: int = 30
    pods: dict[str, PodView] = field(default_factory=dict)
    gone: dict[str, PodView] = field(default_factory=dict)
    relists: int = 0
    _ids: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def id_of(self, name: str) -> int:
        """A stable small number per pod name: the key the LB view and failover use."""
        return self._ids.setdefault(name, len(self._ids) + 1)

    def list(self) -> str:
        """List from scratch; the resourceVersion to watch from."""
        listed = self.core.list_namespaced_pod(self.namespace, label_selector=self.selector)
        now = time.time()
        with self._lock:
            fresh = {p.metadata.name: view(p, self.id_of(p.metadata.name)) for p in listed.items}
            for name, old in self.pods.items():
                if name not in fresh:
                    self._bury(old, now)
            self.pods = fresh
        return listed.metadata.resource_version

    def start(self) -> PodCache:
        rv = self.list()
        self._thread = threading.Thread(target=self._run, args=(rv,), name="pod-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout_s + 5)

    def _run(self, rv: str) -> None:
        while not self._stop.is_set():
            w = watch.Watch()
            try:
                for event in w.stream(self.core.list_namespaced_pod, self.namespace, label_selector=self.selector,
                                      resource_version=rv, timeout_seconds=min(self.timeout_s, 5),
                                      _request_timeout=self.timeout_s + 5):
                    pod = event["object"]
                    rv = pod.metadata.resource_version or rv
                    self._apply(event["type"], pod)
                    if self._stop.is_set():
                        w.stop()
            except ApiException as exc:
                if exc.status == 410:  # too old a resourceVersion: start again from a list
                    self.relists += 1
                    rv = self._relist_or(rv)
                    self._stop.wait(0.2)  # never a hot loop, whatever the server answers next
                else:
                    self._stop.wait(1.0)
            except (Urllib3Error, OSError, ValueError):
                self._stop.wait(1.0)

    def _relist_or(self, rv: str) -> str:
        try:
            return self.list()
        except (ApiException, Urllib3Error, OSError):
            self._stop.wait(1.0)
            return rv

    def _apply(self, kind: str, pod: client.V1Pod) -> None:
        name = pod.metadata.name
        v = view(pod, self.id_of(name))
        with self._lock:
            if kind == "DELETED":
                self.pods.pop(name, None)
                self._bury(v, time.time())
            else:
                self.pods[name] = v

    def _bury(self, v: PodView, now: float) -> None:
        v.phase, v.died_at = "dead", v.died_at or now
        self.gone[v.name] = v

    def snapshot(self) -> tuple[list[PodView], list[PodView]]:
        with self._lock:
            return list(self.pods.values()), list(self.gone.values())
