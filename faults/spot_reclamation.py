"""Spot reclamation mid-inference, on the local cluster.

What a cloud does to a spot/preemptible GPU node: a notice (SIGTERM; the server stops
taking work and drains), then, at the deadline, the machine is gone (SIGKILL, with
whatever was still in flight). The replacement only arrives after the provisioning
delay and then cold-starts, unless a warm-pool replica can take the slot at once.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from faults.base import BlastRadius, Fault
from faults.undo import step
from inferchaos.errors import UsageError
from targets.local.cluster import LocalCluster, wait_for
from targets.local.control import read_desired, set_desired
from targets.local.processes import group_alive, signal_group, start_time
from targets.local.state import ReplicaRecord


@dataclass
class SpotReclamation(Fault):
    name = "spot_reclamation"
    target: LocalCluster | None = None
    notice_s: float = 2.0
    replicas: str = "1"
    #: None keeps the cluster's own setting.
    provisioning_delay_s: float | None = None
    warm_pool: int | None = None
    victims: list[ReplicaRecord] = field(default_factory=list, init=False)
    _deadline: threading.Thread | None = field(default=None, init=False, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.target is None:
            raise UsageError("spot_reclamation needs a target cluster")
        if self.notice_s < 0:
            raise UsageError(f"notice must be 0 or more seconds, got {self.notice_s}")
        if self.provisioning_delay_s is not None and self.provisioning_delay_s < 0:
            raise UsageError(f"provisioning delay must be 0 or more seconds, got {self.provisioning_delay_s}")
        if self.warm_pool is not None and self.warm_pool < 0:
            raise UsageError(f"warm pool must be 0 or more, got {self.warm_pool}")
        self.radius = BlastRadius.parse(self.replicas)

    @property
    def cluster(self) -> LocalCluster:
        assert self.target is not None
        return self.target

    def params(self) -> dict[str, Any]:
        return {"notice_s": self.notice_s, "replicas": str(self.radius),
                "provisioning_delay_s": self.provisioning_delay_s, "warm_pool": self.warm_pool}

    def target_ref(self) -> dict[str, Any]:
        return {"kind": "local", "state_dir": str(self.cluster.state_dir)}

    def _choose(self) -> list[ReplicaRecord]:
        active = sorted(self.cluster.replicas(), key=lambda r: r.slot or 0)
        n = self.radius.resolve(len(active), "replicas")
        return [r for r in active if r.phase == "ready"][:n]

    def _plan(self) -> list[str]:
        victims = self._choose()
        lines = [f"set {k}={v} on cluster {self.cluster.state_dir}" for k, v in self._settings().items()]
        for v in victims:
            lines.append(f"SIGTERM {v.name} (pid {v.pid}, slot r{v.slot}) as the reclamation notice")
            lines.append(f"SIGKILL {v.name} {self.notice_s:g}s later if it is still running")
        return lines

    def _settings(self) -> dict[str, Any]:
        s: dict[str, Any] = {}
        if self.warm_pool is not None:
            s["warm_pool"] = self.warm_pool
        if self.provisioning_delay_s is not None:
            s["provisioning_delay_s"] = self.provisioning_delay_s
        return s

    def _change(self, **settings: Any) -> None:
        """Change runtime settings; the first change journals the settings to restore."""
        state_dir = str(self.cluster.state_dir)
        if not any(u.op == "restore_desired" for u in (self._entry.undo if self._entry else ())):
            self.journal([step("restore_desired", state_dir=state_dir, values=read_desired(state_dir))])
        set_desired(state_dir, **settings)

    def _prepare(self) -> None:
        """The warm pool must be loaded before the notice, so it is set up before the baseline
        (with the cluster's own provisioning delay: the fault's applies to the reclamation)."""
        if self.warm_pool is None:
            return
        self._change(warm_pool=self.warm_pool)
        wait_for(lambda: sum(r.phase == "ready" for r in self.cluster.state.standby()) >= (self.warm_pool or 0),
                 90, f"{self.warm_pool} warm-pool replica(s) ready")

    def _inject(self) -> None:
        self.victims = self._choose()
        if not self.victims:
            raise UsageError("spot_reclamation: no ready replica to reclaim")
        if self.provisioning_delay_s is not None:
            self._change(provisioning_delay_s=self.provisioning_delay_s)
        self.journal([step("end_group", pgid=v.pgid, started=start_time(v.pid), what=f"replica {v.name}")
                      for v in self.victims])
        for v in self.victims:
            signal_group(v.pgid, signal.SIGTERM)
            self.note("notice", v.name)
        self._deadline = threading.Thread(target=self._at_deadline, name="spot-deadline", daemon=True)
        self._deadline.start()

    def _at_deadline(self) -> None:
        """Watch the victims die; kill what is still running when the notice runs out."""
        deadline = time.monotonic() + self.notice_s
        pending = {v.name: v for v in self.victims}
        while pending and not self._stop.is_set():
            for name, v in list(pending.items()):
                if not group_alive(v.pgid):
                    self.note("exited", name)
                    del pending[name]
            if pending and time.monotonic() >= deadline:
                for name, v in pending.items():
                    if signal_group(v.pgid, signal.SIGKILL):
                        self.note("sigkill", name)
                deadline = float("inf")
            self._stop.wait(0.02)

    def died_at(self, name: str) -> float | None:
        event = self.first("exited", name)
        return event.t if event else None

    def _revert(self) -> None:
        super()._revert()  # ends what still runs (the node is gone) and restores settings
        self._stop.set()
        if self._deadline is not None:
            self._deadline.join(5)
        for v in self.victims:
            if self.died_at(v.name) is None:
                self.note("exited", v.name)

    def casualties(self) -> list[tuple[ReplicaRecord, float]]:
        """The replicas this fault removed, each with its time of death (monotonic)."""
        return [(v, t) for v in self.victims if (t := self.died_at(v.name)) is not None]
