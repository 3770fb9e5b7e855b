"""What every fault on a Kubernetes target shares: choosing pods within the blast radius,
the connection its undo steps carry, and the casualties the failover probe follows.

An experiment written for the local cluster runs here unchanged: `SpotReclamation(target=
kube_target, notice_s=2, provisioning_delay_s=3)` builds the Kubernetes counterpart (see
`faults.kubernetes.counterpart`); parameters that only mean something locally (a
provisioning delay, a warm pool) are listed in the plan as not applied.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from faults.base import BlastRadius, Fault, Landing
from faults.undo import step
from inferchaos.errors import UsageError
from targets.kubernetes.pods import PodView
from targets.kubernetes.target import KubeTarget


@dataclass
class KubeFault(Fault):
    target: KubeTarget | None = None
    replicas: str = "1"
    victims: list[PodView] = field(default_factory=list, init=False)
    #: local-only parameters the experiment gave, not applied here (said in the plan).
    ignored: dict[str, Any] = field(default_factory=dict, init=False)
    _died: dict[str, float] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.target is None:
            raise UsageError(f"{self.name} needs a target")
        self.radius = BlastRadius.parse(self.replicas)
        self.validate()

    def validate(self) -> None:
        """Check the fault's own parameters; raise UsageError with one line."""

    @property
    def kube(self) -> KubeTarget:
        assert self.target is not None
        return self.target

    @property
    def conn(self) -> dict[str, Any]:
        return self.kube.connection.to_dict()

    @property
    def namespace(self) -> str:
        return self.kube.namespace

    def target_ref(self) -> dict[str, Any]:
        return {"kind": "kubernetes", "context": self.kube.connection.context, "namespace": self.namespace,
                "selector": self.kube.selector}

    def params(self) -> dict[str, Any]:
        return {"replicas": str(self.radius)}

    def plan(self) -> list[str]:
        lines = super().plan()
        if self.ignored:
            lines.append("not applied on Kubernetes (local cluster only): "
                         + ", ".join(f"{k}={v}" for k, v in self.ignored.items()))
        return lines

    def choose(self) -> list[PodView]:
        """The first Ready pods by name, as many as the blast radius allows of those the
        selector picks (never all of them)."""
        pods = sorted(self.kube.replicas(), key=lambda p: p.name)
        n = self.radius.resolve(len(pods), "pods")
        return [p for p in pods if p.phase == "ready"][:n]

    def victims_or_fail(self) -> list[PodView]:
        victims = self.choose()
        if not victims:
            raise UsageError(f"{self.name}: no Ready pod matches {self.kube.selector} in {self.namespace}")
        return victims

    def landed(self) -> Landing:
        """The victims out of service as the API sees them (deleted, terminating or not
        Ready). What the data plane saw is the failover probe's; reading the process
        state inside the container is the Kubernetes verification issue's."""
        if not self.victims:
            return Landing(False, "no pod was chosen")
        ready = {p.name for p in self.kube.replicas() if p.phase == "ready"}
        serving = [v.name for v in self.victims if v.name in ready]
        if serving:
            return Landing(False, f"still Ready: {', '.join(serving)}")
        return Landing(True, "out of service (API view): " + ", ".join(v.name for v in self.victims))

    def died(self, pod: PodView) -> None:
        self._died.setdefault(pod.name, time.monotonic())

    def casualties(self) -> list[tuple[PodView, float]]:
        """(pod, monotonic time it stopped serving), for the failover probe."""
        return [(v, self._died[v.name]) for v in self.victims if v.name in self._died]

    def undo_exec(self, pod: PodView, argv: list[str], what: str) -> Any:
        return step("kube_exec", conn=self.conn, namespace=self.namespace, pod=pod.name,
                    container=self.kube.container_of(pod), argv=argv, what=what)
