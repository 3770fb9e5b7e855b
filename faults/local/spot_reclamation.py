"""Spot reclamation mid-inference, on the local cluster.

What a cloud does to a spot/preemptible GPU node: a notice (SIGTERM; the server stops
taking work and drains), then, at the deadline, the machine is gone (SIGKILL, with
whatever was still in flight). The replacement only arrives after the provisioning
delay and then cold-starts, unless a warm-pool replica can take the slot at once.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from typing import Any

from inferchaos.faults.base import Landing
from inferchaos.faults.local.base import LocalFault, gone
from inferchaos.faults.registry import executes
from inferchaos.targets.local.cluster import wait_for
from inferchaos.targets.local.processes import group_alive, signal_group
from inferchaos.targets.local.state import ReplicaRecord


@executes("spot_reclamation", "local")
@dataclass
class SpotReclamation(LocalFault):
    """`provisioning_delay_s` and `warm_pool` of None keep the cluster's own settings."""

    def _plan(self) -> list[str]:
        lines = [f"set {k}={v} on cluster {self.cluster.state_dir}" for k, v in self._settings().items()]
        for v in self.choose():
            lines.append(f"SIGTERM {v.name} (pid {v.pid}, slot r{v.slot}) as the reclamation notice")
            lines.append(f"SIGKILL {v.name} {self.args.notice_s:g}s later if it is still running")
        return lines

    def _settings(self) -> dict[str, Any]:
        s: dict[str, Any] = {}
        if self.args.warm_pool is not None:
            s["warm_pool"] = self.args.warm_pool
        if self.args.provisioning_delay_s is not None:
            s["provisioning_delay_s"] = self.args.provisioning_delay_s
        return s

    def _prepare(self) -> None:
        """The warm pool must be loaded before the notice, so it is set up before the baseline
        (with the cluster's own provisioning delay: the fault's applies to the reclamation)."""
        self.fill_warm_pool(self.args.warm_pool)

    def _inject(self) -> None:
        self.victims = self._victims_or_fail()
        if self.args.provisioning_delay_s is not None:
            self.change_settings(provisioning_delay_s=self.args.provisioning_delay_s)
        self.journal_victims()
        for v in self.victims:
            signal_group(v.pgid, signal.SIGTERM)
            self.note("notice", v.name)
        self.watch_deaths(self.victims, until=time.monotonic() + self.args.notice_s, on_deadline=self._kill)

    def _kill(self, still_running: list[ReplicaRecord]) -> None:
        for v in still_running:
            if signal_group(v.pgid, signal.SIGKILL):
                self.note("sigkill", v.name)

    @property
    def land_within_s(self) -> float:  # type: ignore[override]
        return self.args.notice_s + 5.0

    def landed(self) -> Landing:
        """The reclaimed replicas gone, as the node would be after its notice."""
        return gone(self.victims)

    def settle(self) -> None:
        wait_for(lambda: not any(group_alive(v.pgid) for v in self.victims), self.args.notice_s + 15,
                 "the reclaimed replicas gone at the notice deadline")
        super().settle()

    def died_at(self, name: str) -> float | None:
        event = self.first("exited", name)
        return event.t if event else None

    def _revert(self) -> None:
        super()._revert()  # ends what still runs (the node is gone) and restores settings
        for v in self.victims:
            if self.died_at(v.name) is None:
                self.note("exited", v.name)
                self.mark_down(v)
