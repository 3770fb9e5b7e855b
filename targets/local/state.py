"""The cluster's state file: what runs, where, since when.

The supervisor rewrites `state.json` atomically on every change; the CLI, the fixtures,
faults and `inferchaos recover` read it. It is the one record of which process groups
belong to the cluster, so whoever finds the supervisor dead can still end them all.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from inferchaos.targets.ownership import check_private


@dataclass
class ServiceRecord:
    name: str
    pid: int
    pgid: int
    port: int | None
    log: str


@dataclass
class ReplicaRecord:
    name: str
    #: LB slot (HAProxy server `r<slot>`); None while the replica waits in the warm pool.
    slot: int | None
    port: int
    pid: int
    pgid: int
    device: int
    #: starting -> ready; dead once its process is gone.
    phase: str
    started_at: float
    ready_at: float | None = None
    cold_start_s: float | None = None
    exit_code: int | None = None
    died_at: float | None = None
    log: str = ""
    #: when a warm-pool standby was put into a slot (cost counts its idle time apart).
    promoted_at: float | None = None


@dataclass
class ClusterState:
    phase: str  # starting | ready | failed | stopping | stopped
    state_dir: str
    supervisor_pid: int
    supervisor_pgid: int
    spec: dict
    error: str | None = None
    lb_url: str | None = None
    #: the same replicas behind HAProxy's defaults (haproxy.PLAIN_BACKEND).
    plain_lb_url: str | None = None
    stats_url: str | None = None
    haproxy_socket: str | None = None
    model_store_url: str | None = None
    feature_store_url: str | None = None
    vgpu_dir: str | None = None
    #: the dependency proxy's control API, and the store URLs replicas use through it.
    proxy_url: str | None = None
    via_proxy: dict[str, str] = field(default_factory=dict)
    #: Prometheus scraping the replicas and HAProxy (`ClusterSpec.prometheus`), else None.
    prometheus_url: str | None = None
    #: the autoscaler's view: enabled, metric, value, desired, decisions (autoscaler.ScaleLoop.view).
    autoscaler: dict = field(default_factory=dict)
    services: list[ServiceRecord] = field(default_factory=list)
    replicas: list[ReplicaRecord] = field(default_factory=list)
    #: Replicas asked for and not started yet: {"slot": int | None, "due_wall": float}.
    pending: list[dict] = field(default_factory=list)
    #: Replicas that died, newest last, kept for probes (cold starts, deaths).
    history: list[ReplicaRecord] = field(default_factory=list)
    updated_at: float = 0.0
    #: in the environment of every process the cluster runs ($INFERCHAOS_MARK): what proves a
    #: group is the cluster's before anything signals it (a pgid alone may be reused).
    mark: str = ""
    #: the boot the cluster ran in: after a reboot its pids name nothing of it.
    boot: str = ""

    def pgids(self) -> list[int]:
        """Every process group the cluster owns (the supervisor's own last)."""
        groups = [s.pgid for s in self.services] + [r.pgid for r in self.replicas]
        return groups + [self.supervisor_pgid]

    def active(self) -> list[ReplicaRecord]:
        return [r for r in self.replicas if r.slot is not None]

    def standby(self) -> list[ReplicaRecord]:
        return [r for r in self.replicas if r.slot is None]

    def service(self, name: str) -> ServiceRecord:
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(name)


def check_state_dir(state_dir: Path | str) -> None:
    """A state dir decides what is signalled and what replicas run: only this user's own."""
    check_private(state_dir, "dir", "state dir")
    for name in ("state.json", "spec.json", "desired.json"):
        check_private(Path(state_dir) / name, "file", "state file")


def state_path(state_dir: Path | str) -> Path:
    return Path(state_dir) / "state.json"


def write_state(state: ClusterState) -> None:
    path = state_path(state.state_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=1))
    os.replace(tmp, path)


def read_state(state_dir: Path | str) -> ClusterState | None:
    try:
        raw = json.loads(state_path(state_dir).read_text())
    except FileNotFoundError:
        return None
    raw["services"] = [ServiceRecord(**s) for s in raw.get("services", [])]
    raw["replicas"] = [ReplicaRecord(**r) for r in raw.get("replicas", [])]
    raw["history"] = [ReplicaRecord(**r) for r in raw.get("history", [])]
    return ClusterState(**raw)
