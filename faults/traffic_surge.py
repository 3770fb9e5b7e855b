"""Traffic surge: the load jumps N-fold for the fault window — the flash sale.

Nothing breaks; the fleet is simply asked for more than it has. Dynamic batching fills
its batches, queues grow and the tail latency is what users feel. The surge is a second
locust, in its own process group (journalled, so `inferchaos recover` can end it), that
adds (N - 1) times the experiment's users on top of the steady load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from faults.base import Fault
from faults.undo import step
from inferchaos.errors import UsageError
from load.runner import LoadProfile, LoadRunner
from targets.local.processes import start_time


def start_surge(fault: Fault, users: int, spawn_rate: float) -> LoadRunner:
    """A second locust of `users` against the experiment's endpoint, its process group
    journalled in `fault`'s ledger entry the moment it exists."""
    if fault.run is None:
        raise UsageError(f"{fault.name} runs inside an experiment (it adds load to the experiment's own)")
    surge = LoadRunner(fault.run.lb_url, fault.run.out_dir / "surge.jsonl",
                       LoadProfile(users=users, spawn_rate=spawn_rate),
                       log_locust_to=fault.run.out_dir / "surge-locust.log")
    fault.journal([step("end_marked", mark=surge.mark, what="surge locust")])
    surge.start(on_spawn=lambda pgid: fault.journal(
        [step("end_group", pgid=pgid, started=start_time(pgid), what="surge locust")]))
    return surge


@dataclass
class TrafficSurge(Fault):
    name = "traffic_surge"
    factor: float = 4.0
    #: users started per second by the surge (a flash sale does not ramp politely).
    spawn_rate: float = 200.0
    _surge: LoadRunner | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.factor > 1:
            raise UsageError(f"traffic_surge: factor must be above 1 (the load multiplies), got {self.factor}")
        if not self.spawn_rate > 0:
            raise UsageError(f"traffic_surge: spawn_rate must be above 0, got {self.spawn_rate}")

    def params(self) -> dict[str, Any]:
        return {"factor": self.factor, "spawn_rate": self.spawn_rate}

    def target_ref(self) -> dict[str, Any]:
        return {"kind": "endpoint", "url": self.run.lb_url if self.run else None}

    def extra_users(self) -> int:
        base = self.run.users if self.run else 0
        return max(1, round(base * (self.factor - 1)))

    def _plan(self) -> list[str]:
        where = self.run.lb_url if self.run else "the endpoint under test"
        return [f"start a second locust with {self.extra_users()} users at {self.spawn_rate:g}/s against {where} "
                f"({self.factor:g}x the steady load); stop it on revert"]

    def _inject(self) -> None:
        self._surge = start_surge(self, self.extra_users(), self.spawn_rate)
        self.note("surge", f"+{self.extra_users()} users")

    def load_runners(self) -> list[Any]:
        return [self._surge] if self._surge is not None else []

    def _revert(self) -> None:
        if self._surge is not None:
            self._surge.stop()  # SIGINT, merge its log; the journalled end_group then finds it gone
        super()._revert()

    def figures(self) -> dict[str, Any]:
        if self._surge is None:
            return {}
        return {"surge_users": self.extra_users(), "surge_requests": len(self._surge.records())}
