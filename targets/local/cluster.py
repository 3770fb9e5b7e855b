"""`LocalCluster`: start, attach to, inspect and stop the embedded cluster.

The supervisor runs as a separate process in a session of its own, so the cluster can
outlive the process that started it (`inferchaos up --detach`, a game day) or, given an
owner, stop itself when that owner dies (a pytest session). Either way `stop()` and
`inferchaos down` end every process group recorded in the state file, so a supervisor
that was SIGKILLed leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, TypeVar

from inferchaos.ground.errors import ClusterStartError, TargetError
from inferchaos.targets import capabilities as caps
from inferchaos.targets.local import haproxy
from inferchaos.ground.ports import port_in_use
from inferchaos.targets.local.processes import (MARK_ENV, boot_id, end_groups, group_alive, group_carries, new_mark,
                                                 replica_env, spawn)
from inferchaos.targets.local.control import read_desired
from inferchaos.targets.local.spec import ClusterSpec
from inferchaos.targets.local.state import ClusterState, ReplicaRecord, check_state_dir, read_state
from inferchaos.targets.ownership import private_dir

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.1) -> T:
    """Poll `condition` until it returns something truthy; raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


class LocalCluster:
    """A handle on one local cluster, identified by its state directory."""

    def __init__(self, spec: ClusterSpec | None = None, state_dir: Path | str | None = None,
                 owner_pid: int | None = None) -> None:
        self.spec = (spec or ClusterSpec()).validate()
        self._tmp = state_dir is None
        self.state_dir = Path(state_dir or tempfile.mkdtemp(prefix="inferchaos-")).resolve()
        self.owner_pid = owner_pid
        self._proc: subprocess.Popen | None = None

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def attach(cls, state_dir: Path | str) -> LocalCluster:
        check_state_dir(state_dir)
        state = read_state(state_dir)
        if state is None:
            raise TargetError(f"no local cluster in {state_dir} (no state.json): start one with `inferchaos up`")
        return cls(ClusterSpec.from_dict(state.spec), state_dir)

    def start(self, progress: Callable[[str], None] | None = None) -> LocalCluster:
        haproxy.find_haproxy()
        private_dir(self.state_dir, "state dir")
        check_state_dir(self.state_dir)
        if self.spec.lb_port and port_in_use(self.spec.lb_port):
            raise ClusterStartError(f"port {self.spec.lb_port} on 127.0.0.1 is already in use")
        existing = read_state(self.state_dir)
        if existing and existing.phase in ("starting", "ready") and group_alive(existing.supervisor_pgid):
            raise ClusterStartError(
                f"a cluster is already running in {self.state_dir} (supervisor pid "
                f"{existing.supervisor_pid}): stop it with `inferchaos down --state-dir {self.state_dir}`"
            )
        # a new cluster starts from its spec: what a crashed run left (a runtime setting, an
        # armed CUDA trigger) must not reach its replicas
        for stale in ("state.json", "desired.json"):
            (self.state_dir / stale).unlink(missing_ok=True)
        for trigger in (self.state_dir / "cuda").glob("*.trigger"):
            trigger.unlink()
        (self.state_dir / "spec.json").write_text(json.dumps(self.spec.to_dict()))
        argv = [sys.executable, "-m", "inferchaos.targets.local.supervisor", "--state-dir", str(self.state_dir)]
        if self.owner_pid:
            argv += ["--owner-pid", str(self.owner_pid)]
        self._proc = spawn(argv, self.state_dir / "logs" / "supervisor.log",
                           replica_env(PYTHONUNBUFFERED="1", **{MARK_ENV: new_mark("cluster")}))
        try:
            self._wait_started(progress)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_started(self, progress: Callable[[str], None] | None) -> None:
        deadline = time.monotonic() + self.spec.startup_timeout_s + 30
        last = ""
        while True:
            state = read_state(self.state_dir)
            if state is not None:
                if state.phase == "ready":
                    return
                if state.phase == "failed" or (state.phase == "stopped"):
                    raise ClusterStartError(state.error or "the cluster stopped while starting")
                if progress and state.replicas:
                    ready = sum(r.phase == "ready" for r in state.replicas)
                    line = f"starting: {ready}/{len(state.replicas)} replicas ready"
                    if line != last:
                        progress(line)
                        last = line
            if self._proc is not None and self._proc.poll() is not None:
                state = read_state(self.state_dir)
                raise ClusterStartError(
                    (state.error if state and state.error else None)
                    or f"the supervisor exited with code {self._proc.returncode} (see {self.state_dir}/logs)"
                )
            if time.monotonic() > deadline:
                raise ClusterStartError(f"the cluster did not start in time (see {self.state_dir}/logs)")
            time.sleep(0.1)

    def stop(self, timeout_s: float = 20.0) -> list[int]:
        """Stop the supervisor (which ends its replicas), then end any group it left.
        Returns the groups found orphaned and ended here; empty when teardown went clean.

        Only groups that prove they are the cluster's are signalled: this boot, a member
        carrying the cluster's mark. A state file names pgids; after a reboot or a crash
        long ago those may be anyone's."""
        check_state_dir(self.state_dir)
        state = read_state(self.state_dir)
        if state is not None and self._ours(state, state.supervisor_pgid):
            end_groups([state.supervisor_pgid], grace_s=timeout_s)
            state = read_state(self.state_dir)
        if self._proc is not None:
            self._proc.poll()
        if state is None:
            return []
        orphans = [g for g in dict.fromkeys(state.pgids()) if group_alive(g) and self._ours(state, g)]
        end_groups(orphans, grace_s=2.0)
        return orphans

    def unproven(self) -> list[int]:
        """Groups the state file names that are alive but not provably the cluster's."""
        state = read_state(self.state_dir)
        if state is None:
            return []
        return [g for g in dict.fromkeys(state.pgids()) if g > 1 and group_alive(g) and not self._ours(state, g)]

    @staticmethod
    def _ours(state: ClusterState, pgid: int) -> bool:
        return pgid > 1 and pgid != os.getpgrp() and bool(state.boot) and state.boot == boot_id() \
            and group_carries(pgid, state.mark)

    def __enter__(self) -> LocalCluster:
        if self._proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ reading
    @property
    def state(self) -> ClusterState:
        state = read_state(self.state_dir)
        if state is None:
            raise TargetError(f"no local cluster in {self.state_dir}")
        return state

    @property
    def lb_url(self) -> str:
        url = self.state.lb_url
        if not url:
            raise TargetError("the cluster has no load balancer yet")
        return url

    kind = "local"

    @property
    def prometheus_url(self) -> str | None:
        return self.state.prometheus_url

    def desired_replicas(self, state: ClusterState | None = None) -> int:
        """What the supervisor converges on: the autoscaler's count when it is on, else the
        replicas setting; never below a pre-heat."""
        state = state or self.state
        desired = {**state.spec, **read_desired(self.state_dir)}
        # the settings file is the intent; the state lags it by one supervisor tick, and a
        # revert that just turned autoscaling off must not read as "2 replicas wanted"
        on = state.autoscaler.get("enabled") and desired.get("autoscale_target") is not None
        scaled = state.autoscaler.get("desired") if on else None
        return max(int(scaled if scaled is not None else desired["replicas"]), int(desired.get("preheat", 0)))

    def autoscaling(self) -> dict:
        """The autoscaler's view (enabled, metric, value, desired, decisions) and replicas ready."""
        state = self.state
        return {**state.autoscaler, "ready": sum(r.phase == "ready" for r in state.active()),
                "desired": self.desired_replicas(state) if state.autoscaler.get("enabled") else None}

    def replica_records(self) -> list[ReplicaRecord]:
        state = self.state
        return state.replicas + state.history

    def lb_source(self) -> haproxy.AdminSocket:
        return self.admin()

    def metrics_urls(self) -> dict[str, str]:
        return {r.name: f"http://127.0.0.1:{r.port}/metrics" for r in self.state.replicas if r.phase == "ready"}

    def golden_model(self) -> str | None:
        return None if self.spec.replica_cmd else self.spec.model

    def capabilities(self) -> frozenset[str]:
        has = {caps.LB_SLOTS, caps.REPLICA_HEADER, caps.METRICS, caps.GPU, caps.AUTOSCALER}
        return frozenset(has | ({caps.GOLDEN_SET} if self.golden_model() else set()))

    def running(self) -> bool:
        state = read_state(self.state_dir)
        return bool(state and state.phase == "ready" and group_alive(state.supervisor_pgid))

    def replicas(self) -> list[ReplicaRecord]:
        return self.state.active()

    def replica(self, name: str) -> ReplicaRecord:
        for rec in self.state.replicas:
            if rec.name == name:
                return rec
        raise TargetError(f"no live replica named {name!r}")

    def admin(self) -> haproxy.AdminSocket:
        sock = self.state.haproxy_socket
        if not sock:
            raise TargetError("the cluster has no HAProxy admin socket yet")
        return haproxy.AdminSocket(sock)

    def lb_servers(self, backend: str = haproxy.BACKEND) -> list[haproxy.ServerState]:
        """The LB's view of the slots that hold a replica."""
        slots = {haproxy.slot_name(r.slot) for r in self.state.active() if r.slot is not None}
        sock = self.admin().path
        return [s for s in haproxy.AdminSocket(sock, backend=backend).servers() if s.name in slots]

    def behind_plain_lb(self) -> PlainLb:
        """The same cluster as a client behind HAProxy's defaults sees it (round robin, 2-s
        checks, 30-s server timeout): the baseline the tuned LB is compared with."""
        if not self.state.plain_lb_url:
            raise TargetError("this cluster was started without the plain LB front (started by an older version)")
        return PlainLb(self)

    def wait_for(self, condition: Callable[[], T], timeout_s: float, what: str) -> T:
        return wait_for(condition, timeout_s, what)

    def unsteady(self) -> str | None:
        """Why the cluster is not in its steady state (every desired replica and warm-pool
        replica ready, each in rotation at the LB, nothing pending), or None when it is.
        Experiments start from here so one run's aftermath cannot leak into the next."""
        state = self.state
        desired = {**state.spec, **read_desired(self.state_dir)}
        active, standby = state.active(), state.standby()
        if state.phase != "ready":
            return f"cluster phase is {state.phase}"
        want = self.desired_replicas(state)
        if len(active) != want or len(standby) != desired["warm_pool"]:
            return (f"{len(active)}/{want} replicas, "
                    f"{len(standby)}/{desired['warm_pool']} warm-pool replicas")
        gone = [r.name for r in state.replicas if not group_alive(r.pgid)]
        if gone:  # dead, and the supervisor has not reaped it yet
            return "died, not replaced yet: " + ", ".join(gone)
        not_ready = [r.name for r in state.replicas if r.phase != "ready"]
        if not_ready:
            return "not ready yet: " + ", ".join(not_ready)
        down = [f"{s.name}" + ("" if b == haproxy.BACKEND else f" ({b} LB)")
                for b in haproxy.BACKENDS for s in self.lb_servers(b) if not s.up]
        if down:
            return "not in rotation at the LB yet: " + ", ".join(down)
        return None

    def wait_steady(self, timeout_s: float = 90.0) -> None:
        try:
            wait_for(lambda: self.unsteady() is None, timeout_s, "the cluster's steady state")
        except TimeoutError:
            raise TargetError(f"the cluster did not reach its steady state in {timeout_s:g}s: "
                              f"{self.unsteady()}") from None


class PlainLb:
    """A LocalCluster whose load balancer is the plain front: every experiment input the
    engine takes from its target (URL under load, LB states) comes from there, the rest
    (replicas, faults' handles) from the cluster itself."""

    def __init__(self, cluster: LocalCluster) -> None:
        self._cluster = cluster

    def __getattr__(self, name: str):  # noqa: ANN204 - everything else is the cluster's
        return getattr(self._cluster, name)

    @property
    def lb_url(self) -> str:
        return str(self._cluster.state.plain_lb_url)

    def lb_source(self) -> haproxy.AdminSocket:
        return haproxy.AdminSocket(self._cluster.admin().path, backend=haproxy.PLAIN_BACKEND)

    def describe(self) -> str:
        return f"{self._cluster.state_dir} behind HAProxy's defaults ({self.lb_url})"
