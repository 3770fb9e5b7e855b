"""A traffic surge on an autoscaled fleet: does capacity arrive before the users leave?

The cluster is put on queue-length autoscaling (KEDA's semantics: desired replicas =
ceil(summed vllm:num_requests_waiting / target) within [min, max], cooldown before scaling
in) at its minimum size, optionally with a warm pool of pre-loaded standbys that are put
behind the LB first, or pre-heated to a number of replicas ahead of the spike. Then the
load jumps `factor`-fold. `autoscaler=False` runs the same surge with scaling off: the
planted breach of `scale_out_s`.

Every setting is journalled before it is changed and written back on revert.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from inferchaos.faults.base import Landing
from inferchaos.faults.local.base import LocalFault
from inferchaos.faults.registry import executes
from inferchaos.faults.surge import SurgeArrivals, describe_surge, start_surge, surge_profile
from inferchaos.targets.local.autoscaler import Policy


@executes("autoscaled_surge", "local")
@dataclass
class AutoscaledSurge(LocalFault):
    """`target_waiting`: summed queue length per replica the autoscaler aims at; `preheat`:
    replicas held ready before the surge (0: none)."""

    _surge: Any = field(default=None, init=False, repr=False)
    _arrivals: SurgeArrivals | None = field(default=None, init=False, repr=False)

    def validate(self) -> None:
        Policy(self.args.target_waiting, self.args.min_replicas, self.args.max_replicas, cooldown_s=self.args.cooldown_s,
               floor=self.args.preheat).validate()

    def settings(self) -> dict[str, Any]:
        s: dict[str, Any] = {"replicas": self.args.min_replicas, "provisioning_delay_s": self.args.provisioning_delay_s}
        if self.args.autoscaler:
            s |= {"autoscale_target": self.args.target_waiting, "autoscale_min": self.args.min_replicas,
                  "autoscale_max": self.args.max_replicas, "autoscale_cooldown_s": self.args.cooldown_s,
                  "autoscale_polling_s": 0.5}
        if self.args.preheat:
            s["preheat"] = self.args.preheat
        if self.args.warm_pool is not None:
            s["warm_pool"] = self.args.warm_pool
        return s

    def _plan(self) -> list[str]:
        scaling = (f"autoscale on vllm:num_requests_waiting, {self.args.target_waiting:g} per replica, "
                   f"{self.args.min_replicas}..{self.args.max_replicas} replicas, cooldown {self.args.cooldown_s:g}s"
                   if self.args.autoscaler else f"autoscaling OFF, {self.args.min_replicas} replica(s)")
        extras = [f"warm pool {self.args.warm_pool}" for _ in [0] if self.args.warm_pool] + \
                 [f"pre-heated to {self.args.preheat} replicas" for _ in [0] if self.args.preheat]
        return [f"cluster {self.cluster.state_dir}: {scaling}" + (", " + ", ".join(extras) if extras else "")
                + "; settings written back on revert",
                f"then a second locust adds {describe_surge(self, self.args.factor, 200.0)} "
                f"({self.args.factor - 1:g}x the experiment's load) for the fault window"]

    def _prepare(self) -> None:
        self.change_settings(**self.settings())
        self.cluster.wait_steady(120)

    def _inject(self) -> None:
        self._surge = start_surge(self, surge_profile(self, self.args.factor, 200.0))
        self._arrivals = SurgeArrivals(self._surge, self, self.args.factor)
        self.note("surge", describe_surge(self, self.args.factor, 200.0))

    def landed(self) -> Landing:
        return self._arrivals.landed() if self._arrivals else Landing(False, "no surge was started")

    def load_runners(self) -> list[Any]:
        return [self._surge] if self._surge is not None else []

    def _revert(self) -> None:
        if self._surge is not None:
            self._surge.stop()
        super()._revert()

    def figures(self) -> dict[str, Any]:
        return {"settings": self.settings(),
                "surge_requests": len(self._surge.records()) if self._surge is not None else 0}
