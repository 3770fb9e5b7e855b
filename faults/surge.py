"""The extra load of a surge: a second locust, journalled the moment it exists, and the
proof that its requests went out. Shared by traffic_surge (any target) and autoscaled_surge."""

from __future__ import annotations

import time
from dataclasses import replace

from inferchaos.ground.errors import UsageError
from inferchaos.faults.base import Fault, Landing
from inferchaos.faults.undo import group_ref, step
from typing import Any


def surge_profile(fault: Fault, factor: float, spawn_rate: float) -> Any:
    """The extra load a surge of `factor` adds: (factor - 1) times the experiment's."""
    if fault.run is None:
        raise UsageError(f"{fault.name} runs inside an experiment (it adds load to the experiment's own)")
    return replace(fault.run.load.scaled(factor - 1), spawn_rate=spawn_rate, processes=1)


def describe_surge(fault: Fault, factor: float, spawn_rate: float) -> str:
    if fault.run is None:
        return f"{factor - 1:g}x the experiment's load"
    extra = surge_profile(fault, factor, spawn_rate)
    return f"+{extra.rate:g} req/s" if extra.open_loop else f"+{extra.users} users"


def start_surge(fault: Fault, profile: Any) -> Any:
    """A second locust with `profile` against the experiment's endpoint, its process group
    journalled in `fault`'s ledger entry the moment it exists."""
    if fault.run is None:
        raise UsageError(f"{fault.name} runs inside an experiment (it adds load to the experiment's own)")
    surge = fault.run.runner(fault.run.lb_url, fault.run.out_dir / "surge.jsonl", profile,
                       log_locust_to=fault.run.out_dir / "surge-locust.log")
    fault.journal([step("end_marked", mark=surge.mark, what="surge locust")])
    surge.start(on_spawn=lambda pgid: fault.journal(
        [step("end_group", **group_ref(pgid, surge.mark), what="surge locust")]))
    return surge


class SurgeArrivals:
    """The surge's own requests as its load generator logged them (answered or still
    out), to show the arrival rate was reached: a surge that never ran adds nothing."""

    def __init__(self, surge: Any, fault: Fault, factor: float) -> None:
        self.surge, self.since = surge, time.monotonic()
        self._tail = surge.tail()
        self._starts: list[float] = []
        # what was asked, from the experiment's own load: not from the surge's profile,
        # which is what the generator was told and may not be what it could do
        base = fault.run.load if fault.run is not None else None
        self.asked = base.rate * (factor - 1) if base is not None and base.open_loop else None

    def landed(self) -> Landing:
        self._starts.extend(r.start for r in self._tail.read_new())
        now = time.monotonic()
        seen = {round(s, 4) for s in self._starts} | {round(s, 4) for s in self._tail.in_flight()}
        n = sum(1 for s in seen if s >= self.since)
        p, elapsed = self.surge.profile, now - self.since
        if self.asked is not None:
            if elapsed < 1.0:
                return Landing(False, f"{n} surge requests in the first {elapsed:.1f} s")
            rate = n / elapsed
            return Landing(rate >= 0.5 * self.asked, f"the surge sent {rate:.0f} req/s of {self.asked:g} asked "
                                                     f"({n} requests in {elapsed:.1f} s)")
        return Landing(n >= p.users, f"the surge's {p.users} users sent {n} requests in {elapsed:.1f} s")
