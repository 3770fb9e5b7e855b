"""Replica crash: SIGKILL, no notice — a segfault, a kernel OOM kill, a lost node.

Nothing drains: requests in flight on the victim fail (or are retried by the LB), the
LB has to notice on its own, and the supervisor replaces the replica after the
provisioning delay. There is nothing to put back on revert except that delay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inferchaos.faults.base import Landing
from inferchaos.faults.local import LocalFault, gone, non_negative


@dataclass
class ReplicaCrash(LocalFault):
    name = "replica_crash"
    #: None keeps the cluster's own setting.
    provisioning_delay_s: float | None = None

    def validate(self) -> None:
        non_negative(self.name, self.provisioning_delay_s, "provisioning_delay_s")

    def params(self) -> dict[str, Any]:
        return {"replicas": str(self.radius), "provisioning_delay_s": self.provisioning_delay_s}

    def _plan(self) -> list[str]:
        lines = [f"set provisioning_delay_s={self.provisioning_delay_s} on cluster {self.cluster.state_dir}"] \
            if self.provisioning_delay_s is not None else []
        return lines + [f"SIGKILL {v.name} (pid {v.pid}, slot r{v.slot})" for v in self.choose()]

    def _inject(self) -> None:
        self.victims = self._victims_or_fail()
        if self.provisioning_delay_s is not None:
            self.change_settings(provisioning_delay_s=self.provisioning_delay_s)
        self.crash()

    def landed(self) -> Landing:
        """Every victim's process group gone: a kill that hit nothing kills nothing."""
        return gone(self.victims)
