"""Replica crash: SIGKILL, no notice — a segfault, a kernel OOM kill, a lost node.

Nothing drains: requests in flight on the victim fail (or are retried by the LB), the
LB has to notice on its own, and the supervisor replaces the replica after the
provisioning delay. There is nothing to put back on revert except that delay.
"""

from __future__ import annotations

from dataclasses import dataclass

from inferchaos.faults.base import Landing
from inferchaos.faults.local.base import LocalFault, gone
from inferchaos.faults.registry import executes


@executes("replica_crash", "local")
@dataclass
class ReplicaCrash(LocalFault):
    """`provisioning_delay_s` of None keeps the cluster's own setting."""

    def _plan(self) -> list[str]:
        lines = [f"set provisioning_delay_s={self.args.provisioning_delay_s} on cluster {self.cluster.state_dir}"] \
            if self.args.provisioning_delay_s is not None else []
        return lines + [f"SIGKILL {v.name} (pid {v.pid}, slot r{v.slot})" for v in self.choose()]

    def _inject(self) -> None:
        self.victims = self._victims_or_fail()
        if self.args.provisioning_delay_s is not None:
            self.change_settings(provisioning_delay_s=self.args.provisioning_delay_s)
        self.crash()

    def landed(self) -> Landing:
        """Every victim's process group gone: a kill that hit nothing kills nothing."""
        return gone(self.victims)
