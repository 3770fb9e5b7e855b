"""Replica hang: SIGSTOP, then SIGCONT on revert.

A hung replica is not a dead one: its socket stays open and accepts connections, so
the LB's connection-failure retries never fire; only the health check's timeout takes
it out of rotation, and requests already routed to it wait (for `timeout server`, or
until it resumes). Probes must see that as tail latency, not as errors.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

from inferchaos.faults.base import Landing
from inferchaos.faults.local.base import LocalFault
from inferchaos.faults.registry import executes
from inferchaos.faults.undo import process_ref, step
from inferchaos.targets.local.processes import signal_group, stopped


@executes("replica_hang", "local")
@dataclass
class ReplicaHang(LocalFault):
    """SIGSTOP the victims' process groups; the journal sends SIGCONT."""

    def _plan(self) -> list[str]:
        return [f"SIGSTOP {v.name} (pid {v.pid}, slot r{v.slot}); SIGCONT on revert" for v in self.choose()]

    def _inject(self) -> None:
        self.victims = self._victims_or_fail()
        # SIGCONT first in the undo: a replica left stopped would hold its slot forever.
        mark = self.cluster.state.mark
        self.journal([step("signal_process", **process_ref(v.pid, mark), sig="SIGCONT",
                           what=f"replica {v.name}") for v in self.victims])
        for v in self.victims:
            signal_group(v.pgid, signal.SIGSTOP)
            self.note("sigstop", v.name)
            self.mark_down(v)

    def landed(self) -> Landing:
        """Every victim's server process in state T (stopped), read from /proc."""
        if not self.victims:
            return Landing(False, "no replica was chosen")
        running = [v.name for v in self.victims if not stopped(v.pid)]
        if running:
            return Landing(False, f"not stopped: {', '.join(running)}")
        return Landing(True, "stopped (state T): " + ", ".join(f"{v.name} (pid {v.pid})" for v in self.victims))
