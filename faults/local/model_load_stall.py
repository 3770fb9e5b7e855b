"""Model-load stall: the model store gets slow or stalls exactly when replicas must
(re)load their weights, so a replacement's cold start stretches from seconds to minutes.

The fault degrades the proxy route to the model store (a full stall for `stall_s`
seconds, a bandwidth limit, added latency), then crashes `replicas` replicas so their
replacements have to load through it. A warm pool (pre-loaded standby replicas, set up
before the baseline) is what turns "capacity back after the stall" into "capacity back
in seconds"; the experiment runs both ways to show the difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from inferchaos.faults.base import Landing
from inferchaos.faults.local import LocalFault, gone, non_negative, route_shows
from inferchaos.errors import UsageError
from inferchaos.targets.local.depproxy import Toxics


@dataclass
class ModelLoadStall(LocalFault):
    name = "model_load_stall"
    #: seconds the store stalls from injection; math.inf = until revert.
    stall_s: float = 5.0
    bandwidth_kbs: float | None = None
    latency_ms: float = 0.0
    warm_pool: int | None = None
    provisioning_delay_s: float | None = None

    def validate(self) -> None:
        for key in ("stall_s", "latency_ms", "provisioning_delay_s", "warm_pool"):
            non_negative(self.name, getattr(self, key), key)
        if self.bandwidth_kbs is not None and not self.bandwidth_kbs > 0:
            raise UsageError(f"{self.name}: bandwidth_kbs must be above 0, got {self.bandwidth_kbs}")
        if not self.toxics().active:
            raise UsageError(f"{self.name}: nothing slows the store (give stall_s, bandwidth_kbs or latency_ms)")

    def toxics(self) -> Toxics:
        return Toxics(latency_ms=self.latency_ms, bandwidth_kbs=self.bandwidth_kbs, stall_s=self.stall_s)

    def params(self) -> dict[str, Any]:
        return {"replicas": str(self.radius), **self.toxics().to_dict(), "warm_pool": self.warm_pool,
                "provisioning_delay_s": self.provisioning_delay_s}

    def _plan(self) -> list[str]:
        stall = "until revert" if math.isinf(self.stall_s) else f"{self.stall_s:g}s"
        lines = [f"set warm_pool={self.warm_pool} before the baseline"] if self.warm_pool is not None else []
        lines.append(f"model store route: stall {stall}, bandwidth {self.bandwidth_kbs or 'unlimited'} KB/s, "
                     f"+{self.latency_ms:g} ms; clear on revert")
        return lines + [f"SIGKILL {v.name} (slot r{v.slot}) so its replacement loads through the slow store"
                        for v in self.choose()]

    def _prepare(self) -> None:
        self.fill_warm_pool(self.warm_pool)

    def _inject(self) -> None:
        self.victims = self._victims_or_fail()
        if self.provisioning_delay_s is not None:
            self.change_settings(provisioning_delay_s=self.provisioning_delay_s)
        self.degrade("model_store", self.toxics())
        self.crash()

    def landed(self) -> Landing:
        """The store route slowed, read back from the proxy, and the victims gone, so
        their replacements must load through it."""
        route = route_shows(self.dependency_route("model_store"), self.toxics(), "model store")
        if not route.ok:
            return route
        dead = gone(self.victims)
        return Landing(dead.ok, f"{route.evidence}; {dead.evidence}")
