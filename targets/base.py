"""What the engine and probes need of any target: the local cluster and Kubernetes alike.

A protocol, not a base class: `LocalCluster` and `KubeTarget` share no code, only this
shape. Times are wall-clock seconds (they come from process records and API objects).
"""

from __future__ import annotations

from typing import Iterable, Protocol


class Replica(Protocol):
    """One serving process (a local replica, a pod)."""

    name: str
    #: the LB slot; replicas of one group share it on Kubernetes (no slots there).
    slot: int | None
    #: the key the LB view uses for this replica (local: its port; Kubernetes: an id).
    port: int
    phase: str  # starting | ready | dead
    started_at: float
    ready_at: float | None
    died_at: float | None
    exit_code: int | None


class LbServer(Protocol):
    name: str
    port: int

    @property
    def state(self) -> str: ...  # running | starting | stopping | stopped | maint


class LbSource(Protocol):
    def servers(self) -> Iterable[LbServer]: ...


class Target(Protocol):
    kind: str

    @property
    def lb_url(self) -> str: ...

    @property
    def prometheus_url(self) -> str | None: ...

    def wait_steady(self, timeout_s: float = 90.0) -> None: ...

    def replicas(self) -> list[Replica]:
        """The replicas in service now (ready or starting), not the warm pool."""

    def desired_replicas(self) -> int: ...

    def replica_records(self) -> list[Replica]:
        """Every replica known, the dead ones of this run included (cold starts, failover)."""

    def lb_source(self) -> LbSource:
        """Whose view says which replica takes traffic (HAProxy; the Service's endpoints)."""

    def metrics_urls(self) -> dict[str, str]:
        """replica name -> its /metrics URL, for those reachable from here."""

    def golden_model(self) -> str | None:
        """The reference model's name when the target serves it (the golden set applies)."""

    def capabilities(self) -> frozenset[str]:
        """What it can show a probe (`targets.capabilities`): a probe needing what is not
        here reports "not measured: the target has no <capability>"."""
