"""Replica restart on the local cluster: SIGTERM to the replica's process group, SIGKILL if
it still runs `grace_s` later, and the supervisor starts it again in its slot at once (the
restart is in place: no node to provision, so the provisioning delay is 0 while it holds).

The drain is the server's: a reference replica fails its health check and finishes what it
holds; a third-party server does what it does on SIGTERM, which is what this measures.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass

from inferchaos.faults.base import Landing
from inferchaos.faults.local.base import LocalFault, gone
from inferchaos.faults.registry import executes
from inferchaos.targets.local.cluster import wait_for
from inferchaos.targets.local.processes import group_alive, signal_group
from inferchaos.targets.local.state import ReplicaRecord


@executes("replica_restart", "local")
@dataclass
class ReplicaRestart(LocalFault):
    """SIGTERM, SIGKILL after `grace_s`; the slot restarts with no provisioning delay."""

    def _plan(self) -> list[str]:
        return [f"SIGTERM {v.name} (pid {v.pid}, slot r{v.slot}); SIGKILL {self.args.grace_s:g}s later if it still "
                "runs; it starts again in its slot at once (provisioning delay 0 until revert)" for v in self.choose()]

    def _inject(self) -> None:
        self.victims = self._victims_or_fail()
        self.change_settings(provisioning_delay_s=0.0)
        self.journal_victims()
        for v in self.victims:
            signal_group(v.pgid, signal.SIGTERM)
            self.note("sigterm", v.name)
        self.watch_deaths(self.victims, until=time.monotonic() + self.args.grace_s, on_deadline=self._kill)

    def _kill(self, still_running: list[ReplicaRecord]) -> None:
        for v in still_running:
            if signal_group(v.pgid, signal.SIGKILL):
                self.note("sigkill", v.name)

    def settle(self) -> None:
        """By hand, `inject` exits after this: the SIGKILL at the grace deadline is sent first."""
        wait_for(lambda: not any(group_alive(v.pgid) for v in self.victims), self.args.grace_s + 15,
                 "the restarted replicas' old processes gone")
        super().settle()

    @property
    def land_within_s(self) -> float:  # type: ignore[override]
        return self.args.grace_s + 5.0

    def landed(self) -> Landing:
        """The restarted replicas' old processes gone: a SIGTERM the server ignored, or one
        that never reached it, restarts nothing."""
        return gone(self.victims)
