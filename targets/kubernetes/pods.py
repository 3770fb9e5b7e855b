"""The pods a selector picks, kept current by a watch: what the engine calls replicas.

Sampling the API ten times a second (as the local target samples HAProxy) would load a
real API server; a watch keeps a cache instead (targets.kubernetes.informer), and the cache
remembers the pods deleted during the run, since cold starts and failover are judged afterwards.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from kubernetes import client

from inferchaos.targets.kubernetes.informer import Informer


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
    ending = meta.deletion_timestamp is not None or status.phase in ("Failed", "Succeeded")
    phase = "dead" if ending else ("ready" if ready_at is not None else "starting")
    return PodView(
        name=meta.name, port=port, phase=phase, started_at=_wall(meta.creation_timestamp) or time.time(),
        ready_at=ready_at, died_at=_ended_at(statuses) if ending else None, exit_code=exit_code,
        node=spec.node_name if spec else None, ip=status.pod_ip, restarts=sum(cs.restart_count or 0 for cs in statuses),
        oom_killed=oom, terminated_at=finished, containers=tuple(c.name for c in (spec.containers if spec else [])),
    )


def _ended_at(statuses: list[client.V1ContainerStatus]) -> float | None:
    """When the last container of an ending pod finished, as the kubelet reports it; None
    while one still runs. Not deletionTimestamp: that is when the grace period will run out
    (the delete's time plus the grace), a deadline, not a death. A pod removed before the
    kubelet said (the watch's DELETED) dies when that is seen (PodCache)."""
    ends = [_wall(cs.state.terminated.finished_at) if cs.state and cs.state.terminated else None for cs in statuses]
    if not ends or None in ends:
        return None
    return max(e for e in ends if e is not None)


@dataclass
class PodCache:
    core: client.CoreV1Api
    namespace: str
    selector: str
    pods: dict[str, PodView] = field(default_factory=dict)
    gone: dict[str, PodView] = field(default_factory=dict)
    _ids: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _informer: Informer | None = None

    def id_of(self, name: str) -> int:
        """A stable small number per pod name: the key the LB view and failover use."""
        return self._ids.setdefault(name, len(self._ids) + 1)

    @property
    def relists(self) -> int:
        return self._informer.relists if self._informer else 0

    def start(self) -> PodCache:
        self._informer = Informer(self.core.list_namespaced_pod, (self.namespace,),
                                  {"label_selector": self.selector}, self._apply, name="pod-watch").start()
        return self

    def stop(self) -> None:
        if self._informer is not None:
            self._informer.stop()

    def _apply(self, kind: str, pod: client.V1Pod) -> None:
        """A pod that leaves the selection (deleted, or relabelled out: DELETED to a selector's
        watch) is remembered as dead: cold starts and failover are judged afterwards."""
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
