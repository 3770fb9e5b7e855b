"""Dependency latency: the path from the replicas to a store gets slow, jittery,
narrow, stalls, or resets — the network and storage weather of a real fleet.

It acts on the dependency proxy every local cluster puts between its replicas and the
model store / feature store, so the stores themselves stay healthy and only the path
degrades, as with Toxiproxy or Chaos Mesh's NetworkChaos. Undo clears the route.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from inferchaos.faults.base import Landing
from inferchaos.faults.local import LocalFault, non_negative, route_shows, timed_read
from inferchaos.errors import UsageError
from inferchaos.targets.local.depproxy import Toxics

DEPENDENCIES = ("model_store", "feature_store")


@dataclass
class DependencyLatency(LocalFault):
    name = "dependency_latency"
    dependency: str = "feature_store"
    latency_ms: float = 50.0
    jitter_ms: float = 0.0
    bandwidth_kbs: float | None = None
    stall_s: float = 0.0
    reset: bool = False
    measured: dict[str, Any] | None = field(default=None, init=False)

    def validate(self) -> None:
        if self.dependency not in DEPENDENCIES:
            raise UsageError(f"{self.name}: dependency must be one of {', '.join(DEPENDENCIES)}, "
                             f"got {self.dependency!r}")
        for key in ("latency_ms", "jitter_ms", "stall_s"):
            non_negative(self.name, getattr(self, key), key)
        if self.bandwidth_kbs is not None and not self.bandwidth_kbs > 0:
            raise UsageError(f"{self.name}: bandwidth_kbs must be above 0, got {self.bandwidth_kbs}")
        if not self.toxics().active:
            raise UsageError(f"{self.name}: nothing to inject (give latency_ms, jitter_ms, bandwidth_kbs, "
                             "stall_s or reset)")

    def toxics(self) -> Toxics:
        return Toxics(latency_ms=self.latency_ms, jitter_ms=self.jitter_ms, bandwidth_kbs=self.bandwidth_kbs,
                      stall_s=self.stall_s, reset=self.reset)

    def params(self) -> dict[str, Any]:
        return {"dependency": self.dependency, **self.toxics().to_dict()}

    def _plan(self) -> list[str]:
        return [f"set {self.toxics().to_dict()} on the proxy route to {self.dependency} "
                f"({self.cluster.state.proxy_url}); clear it on revert"]

    def _inject(self) -> None:
        self.degrade(self.dependency, self.toxics())
        self.measured = timed_read(self.cluster.state.via_proxy[self.dependency])

    def landed(self) -> Landing:
        """The route's toxics read back from the proxy, and one request through it timed:
        the delay must show (or the stall time out, or the reset fail it)."""
        route = route_shows(self.dependency_route(self.dependency), self.toxics(), self.dependency)
        if not route.ok:
            return route
        took = timed_read(self.cluster.state.via_proxy[self.dependency])
        self.measured = self.measured or took
        expect = self.latency_ms - self.jitter_ms
        if self.reset or self.stall_s:
            shows = took["timed_out"] or took["status"] != 200 or took["health_ms"] >= 300 * min(self.stall_s, 2)
        elif expect > 0:
            shows = took["health_ms"] >= 0.5 * expect
        else:
            shows = True  # bandwidth or jitter alone: the route read back is the evidence
        if not shows:
            return Landing(False, f"{route.evidence}, but a request through it took {took['health_ms']} ms "
                                  f"(status {took['status']})")
        return Landing(True, f"{route.evidence}; a request through it took {took['health_ms']} ms "
                             f"(status {took['status']})")

    def figures(self) -> dict[str, Any]:
        return {"through_proxy_after_inject": self.measured} if self.measured else {}

