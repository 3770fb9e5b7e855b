"""Dependency latency: the path from the replicas to a store gets slow, jittery,
narrow, stalls, or resets — the network and storage weather of a real fleet.

It acts on the dependency proxy every local cluster puts between its replicas and the
model store / feature store, so the stores themselves stay healthy and only the path
degrades, as with Toxiproxy or Chaos Mesh's NetworkChaos. Undo clears the route.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from faults.local import LocalFault, non_negative
from inferchaos.errors import UsageError
from targets.local.depproxy import Toxics

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
        self.measured = measure(self.cluster.state.via_proxy[self.dependency])

    def figures(self) -> dict[str, Any]:
        return {"through_proxy_after_inject": self.measured} if self.measured else {}


def measure(base_url: str, timeout_s: float = 2.0) -> dict[str, Any]:
    """One request through the degraded path, timed: the effect seen from a replica's side."""
    started = time.monotonic()
    timed_out = False
    try:
        status: Any = httpx.get(f"{base_url}/health", timeout=timeout_s).status_code
    except httpx.HTTPError as exc:
        status, timed_out = type(exc).__name__, isinstance(exc, httpx.TimeoutException)
    return {"health_ms": round((time.monotonic() - started) * 1000, 1), "status": status, "timed_out": timed_out}
