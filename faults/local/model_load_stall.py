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

from inferchaos.faults.base import Landing
from inferchaos.faults.local.base import LocalFault, gone, route_shows
from inferchaos.faults.registry import executes
from inferchaos.targets.local.depproxy import Toxics


@executes("model_load_stall", "local")
@dataclass
class ModelLoadStall(LocalFault):
    """`stall_s` of math.inf stalls until revert."""

    def toxics(self) -> Toxics:
        return Toxics(latency_ms=self.args.latency_ms, bandwidth_kbs=self.args.bandwidth_kbs, stall_s=self.args.stall_s)

    def _plan(self) -> list[str]:
        stall = "until revert" if math.isinf(self.args.stall_s) else f"{self.args.stall_s:g}s"
        lines = [f"set warm_pool={self.args.warm_pool} before the baseline"] if self.args.warm_pool is not None else []
        lines.append(f"model store route: stall {stall}, bandwidth {self.args.bandwidth_kbs or 'unlimited'} KB/s, "
                     f"+{self.args.latency_ms:g} ms; clear on revert")
        return lines + [f"SIGKILL {v.name} (slot r{v.slot}) so its replacement loads through the slow store"
                        for v in self.choose()]

    def _prepare(self) -> None:
        self.fill_warm_pool(self.args.warm_pool)

    def _inject(self) -> None:
        self.victims = self._victims_or_fail()
        if self.args.provisioning_delay_s is not None:
            self.change_settings(provisioning_delay_s=self.args.provisioning_delay_s)
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
