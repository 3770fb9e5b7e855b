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
from inferchaos.faults.local.base import LocalFault, route_shows, timed_read
from inferchaos.faults.registry import executes
from inferchaos.targets.local.depproxy import Toxics

@executes("dependency_latency", "local")
@dataclass
class DependencyLatency(LocalFault):
    measured: dict[str, Any] | None = field(default=None, init=False)

    def toxics(self) -> Toxics:
        return Toxics(latency_ms=self.args.latency_ms, jitter_ms=self.args.jitter_ms, bandwidth_kbs=self.args.bandwidth_kbs,
                      stall_s=self.args.stall_s, reset=self.args.reset)

    def _plan(self) -> list[str]:
        return [f"set {self.toxics().to_dict()} on the proxy route to {self.args.dependency} "
                f"({self.cluster.state.proxy_url}); clear it on revert"]

    def _inject(self) -> None:
        self.degrade(self.args.dependency, self.toxics())
        self.measured = timed_read(self.cluster.state.via_proxy[self.args.dependency])

    def landed(self) -> Landing:
        """The route's toxics read back from the proxy, and one request through it timed:
        the delay must show (or the stall time out, or the reset fail it)."""
        route = route_shows(self.dependency_route(self.args.dependency), self.toxics(), self.args.dependency)
        if not route.ok:
            return route
        took = timed_read(self.cluster.state.via_proxy[self.args.dependency])
        self.measured = self.measured or took
        expect = self.args.latency_ms - self.args.jitter_ms
        if self.args.reset or self.args.stall_s:
            shows = took["timed_out"] or took["status"] != 200 or took["health_ms"] >= 300 * min(self.args.stall_s, 2)
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

