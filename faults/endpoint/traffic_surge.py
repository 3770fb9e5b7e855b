"""Traffic surge: the load jumps N-fold for the fault window — the flash sale.

Nothing breaks; the fleet is simply asked for more than it has. Dynamic batching fills
its batches, queues grow and the tail latency is what users feel. The surge is a second
locust, in its own process group (journalled, so `inferchaos recover` can end it), that
adds (N - 1) times the experiment's load on top of the steady one: its arrival rate under
open loop (users arrive whatever the queue does, as in a flash sale), its users under
closed loop (where the extra users also wait for their answers, so latency limits itself).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from inferchaos.faults.base import Fault, Landing
from inferchaos.faults.registry import executes
from inferchaos.faults.surge import SurgeArrivals, describe_surge, start_surge, surge_profile


@executes("traffic_surge", "local", "kubernetes")
@dataclass
class TrafficSurge(Fault):
    """Acts on the endpoint alone, so one executor serves every target. `spawn_rate`: users
    started per second under closed loop (a flash sale does not ramp politely)."""

    _surge: Any = field(default=None, init=False, repr=False)
    _arrivals: SurgeArrivals | None = field(default=None, init=False, repr=False)

    def target_ref(self) -> dict[str, Any]:
        return {"kind": "endpoint", "url": self.run.lb_url if self.run else None}

    def _plan(self) -> list[str]:
        where = self.run.lb_url if self.run else "the endpoint under test"
        return [f"start a second locust with {describe_surge(self, self.args.factor, self.args.spawn_rate)} against {where} "
                f"({self.args.factor:g}x the steady load); stop it on revert"]

    def _inject(self) -> None:
        self._surge = start_surge(self, surge_profile(self, self.args.factor, self.args.spawn_rate))
        self._arrivals = SurgeArrivals(self._surge, self, self.args.factor)
        self.note("surge", describe_surge(self, self.args.factor, self.args.spawn_rate))

    def landed(self) -> Landing:
        return self._arrivals.landed() if self._arrivals else Landing(False, "no surge was started")

    def load_runners(self) -> list[Any]:
        return [self._surge] if self._surge is not None else []

    def _revert(self) -> None:
        if self._surge is not None:
            self._surge.stop()  # SIGINT, merge its log; the journalled end_group then finds it gone
        super()._revert()

    def figures(self) -> dict[str, Any]:
        if self._surge is None:
            return {}
        p = self._surge.profile
        return {"surge_rate": p.rate, "surge_users": None if p.open_loop else p.users,
                "surge_requests": len(self._surge.records())}
