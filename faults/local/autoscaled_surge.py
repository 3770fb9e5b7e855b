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

from inferchaos.faults.local import LocalFault, non_negative
from inferchaos.faults.base import Landing
from inferchaos.faults.traffic_surge import SurgeArrivals, TrafficSurge, describe_surge, start_surge, surge_profile
from inferchaos.errors import UsageError
from inferchaos.load.runner import LoadRunner
from inferchaos.targets.local.autoscaler import Policy


@dataclass
class AutoscaledSurge(LocalFault):
    name = "autoscaled_surge"
    factor: float = 4.0
    #: summed queue length per replica the autoscaler aims at.
    target_waiting: float = 4.0
    min_replicas: int = 1
    max_replicas: int = 4
    cooldown_s: float = 4.0
    warm_pool: int | None = None
    #: replicas held ready before the surge (0: none).
    preheat: int = 0
    autoscaler: bool = True
    provisioning_delay_s: float = 1.0
    _surge: LoadRunner | None = field(default=None, init=False, repr=False)
    _arrivals: SurgeArrivals | None = field(default=None, init=False, repr=False)

    def validate(self) -> None:
        Policy(self.target_waiting, self.min_replicas, self.max_replicas, cooldown_s=self.cooldown_s,
               floor=self.preheat).validate()
        non_negative(self.name, self.provisioning_delay_s, "provisioning_delay_s")
        if self.preheat and self.preheat > self.max_replicas:
            raise UsageError(f"{self.name}: preheat {self.preheat} is above max {self.max_replicas}")
        TrafficSurge(factor=self.factor)  # checks the factor

    def params(self) -> dict[str, Any]:
        return {"factor": self.factor, "target_waiting": self.target_waiting, "min": self.min_replicas,
                "max": self.max_replicas, "cooldown_s": self.cooldown_s, "warm_pool": self.warm_pool,
                "preheat": self.preheat, "autoscaler": self.autoscaler}

    def settings(self) -> dict[str, Any]:
        s: dict[str, Any] = {"replicas": self.min_replicas, "provisioning_delay_s": self.provisioning_delay_s}
        if self.autoscaler:
            s |= {"autoscale_target": self.target_waiting, "autoscale_min": self.min_replicas,
                  "autoscale_max": self.max_replicas, "autoscale_cooldown_s": self.cooldown_s,
                  "autoscale_polling_s": 0.5}
        if self.preheat:
            s["preheat"] = self.preheat
        if self.warm_pool is not None:
            s["warm_pool"] = self.warm_pool
        return s

    def _plan(self) -> list[str]:
        scaling = (f"autoscale on vllm:num_requests_waiting, {self.target_waiting:g} per replica, "
                   f"{self.min_replicas}..{self.max_replicas} replicas, cooldown {self.cooldown_s:g}s"
                   if self.autoscaler else f"autoscaling OFF, {self.min_replicas} replica(s)")
        extras = [f"warm pool {self.warm_pool}" for _ in [0] if self.warm_pool] + \
                 [f"pre-heated to {self.preheat} replicas" for _ in [0] if self.preheat]
        return [f"cluster {self.cluster.state_dir}: {scaling}" + (", " + ", ".join(extras) if extras else "")
                + "; settings written back on revert",
                f"then a second locust adds {describe_surge(self, self.factor, 200.0)} "
                f"({self.factor - 1:g}x the experiment's load) for the fault window"]

    def _prepare(self) -> None:
        self.change_settings(**self.settings())
        self.cluster.wait_steady(120)

    def _inject(self) -> None:
        self._surge = start_surge(self, surge_profile(self, self.factor, 200.0))
        self._arrivals = SurgeArrivals(self._surge, self, self.factor)
        self.note("surge", describe_surge(self, self.factor, 200.0))

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
