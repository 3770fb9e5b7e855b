"""What every executor on the local cluster shares: choosing replicas within the blast
radius, changing runtime settings with their undo journalled first, and watching the
replicas it hit so probes know when each one stopped serving.

Kept out of `faults/base.py` because the base knows nothing about any target; the
Kubernetes executors have their own (faults/kubernetes/base.py).
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from inferchaos.faults.base import Fault, Landing
from inferchaos.faults.radius import BlastRadius
from inferchaos.faults.undo import group_ref, step
from inferchaos.ground.errors import UsageError
from inferchaos.targets.local.cluster import LocalCluster, wait_for
from inferchaos.targets.local.control import read_desired, set_desired
from inferchaos.targets.local.processes import group_alive, signal_group
from inferchaos.targets.local.state import ReplicaRecord


def gone(victims: list[ReplicaRecord]) -> Landing:
    """Landed when no process of any victim's group is left (read from /proc)."""
    if not victims:
        return Landing(False, "no replica was chosen")
    alive = [v.name for v in victims if group_alive(v.pgid)]
    if alive:
        return Landing(False, f"still running: {', '.join(alive)}")
    return Landing(True, "gone: " + ", ".join(f"{v.name} (pid {v.pid})" for v in victims))


def timed_read(base_url: str, timeout_s: float = 2.0) -> dict[str, Any]:
    """One request through a degraded path, timed: the effect seen from a replica's side."""
    started = time.monotonic()
    timed_out = False
    try:
        status: Any = httpx.get(f"{base_url}/health", timeout=timeout_s).status_code
    except httpx.HTTPError as exc:
        status, timed_out = type(exc).__name__, isinstance(exc, httpx.TimeoutException)
    return {"health_ms": round((time.monotonic() - started) * 1000, 1), "status": status, "timed_out": timed_out}


def route_shows(route: dict, toxics: Any, what: str) -> Landing:
    """The proxy's own view of a route, read back: the toxics asked for are in place."""
    wanted = toxics.to_dict()
    have = route.get("toxics", {})
    if any(have.get(k) != v for k, v in wanted.items()):
        return Landing(False, f"the {what} route reads back {have}, not {wanted}")
    return Landing(True, f"the {what} route reads back {wanted}")


@dataclass
class LocalFault(Fault):
    """An executor on a `LocalCluster`. `args.replicas`, where the spec has it, is the blast
    radius (count or percentage)."""

    #: Replicas this fault took out of service, with the monotonic time each stopped serving.
    victims: list[ReplicaRecord] = field(default_factory=list, init=False)
    _down_at: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    _watch_stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _watcher: threading.Thread | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.target, LocalCluster):
            raise UsageError(f"{self.name} needs a local cluster")
        self.radius = BlastRadius.parse(self.args.get("replicas", "1"))
        super().__post_init__()

    @property
    def cluster(self) -> LocalCluster:
        assert self.target is not None
        return self.target

    def target_ref(self) -> dict[str, Any]:
        return {"kind": "local", "state_dir": str(self.cluster.state_dir)}

    # ----------------------------------------------------------------------- choosing
    def choose(self) -> list[ReplicaRecord]:
        """The first ready replicas by slot, as many as the blast radius allows (it refuses
        to take every replica: at least one must keep serving)."""
        active = sorted(self.cluster.state.active(), key=lambda r: r.slot or 0)
        n = self.radius.resolve(len(active), "replicas")
        return [r for r in active if r.phase == "ready"][:n]

    def _victims_or_fail(self) -> list[ReplicaRecord]:
        victims = self.choose()
        if not victims:
            raise UsageError(f"{self.name}: no ready replica to act on")
        return victims

    # ----------------------------------------------------------------------- settings
    def change_settings(self, **settings: Any) -> None:
        """Change runtime settings (desired.json); the first change journals what to restore."""
        state_dir = str(self.cluster.state_dir)
        if not any(u.op == "restore_desired" for u in (self._entry.undo if self._entry else ())):
            self.journal([step("restore_desired", state_dir=state_dir, values=read_desired(state_dir))])
        set_desired(state_dir, **settings)

    def fill_warm_pool(self, size: int | None) -> None:
        """Ask for `size` warm-pool replicas and wait until they are loaded: a pool only
        helps if it is ready before the fault, so this belongs in `_prepare`."""
        if size is None:
            return
        self.change_settings(warm_pool=size)
        wait_for(lambda: sum(r.phase == "ready" for r in self.cluster.state.standby()) >= size,
                 90, f"{size} warm-pool replica(s) ready")

    def journal_victims(self) -> None:
        """Journal ending each victim's group: whatever of it still runs at undo is gone."""
        mark = self.cluster.state.mark
        self.journal([step("end_group", **group_ref(v.pgid, mark), what=f"replica {v.name}") for v in self.victims])

    def crash(self) -> None:
        """SIGKILL every victim now (journalled first); the supervisor replaces them."""
        self.journal_victims()
        for v in self.victims:
            signal_group(v.pgid, signal.SIGKILL)
            self.note("sigkill", v.name)
            self.mark_down(v)  # it stops serving now; the watcher notes when it is reaped
        self.watch_deaths(self.victims)

    # ----------------------------------------------------------------------- dependencies
    def degrade(self, dependency: str, toxics: Any) -> dict:
        """Put `toxics` on the proxy route to `dependency` (journalled clear first)."""
        from inferchaos.targets.local.depproxy import ProxyControl

        url = self.cluster.state.proxy_url
        if not url:
            raise UsageError(f"{self.name}: this cluster has no dependency proxy (started by an older version?)")
        self.journal([step("clear_toxics", state_dir=str(self.cluster.state_dir), route=dependency)])
        route = ProxyControl(url).set_toxics(dependency, toxics)
        self.note("toxics", dependency)
        return route

    def dependency_route(self, dependency: str) -> dict:
        from inferchaos.targets.local.depproxy import ProxyControl

        return ProxyControl(self.cluster.state.proxy_url or "").route(dependency)

    # ----------------------------------------------------------------------- deaths
    def mark_down(self, victim: ReplicaRecord, at: float | None = None) -> None:
        """Record that `victim` stopped serving (died, or hung) at `at` (default: now)."""
        self._down_at.setdefault(victim.name, time.monotonic() if at is None else at)

    def watch_deaths(self, victims: list[ReplicaRecord], until: float | None = None,
                     on_deadline: Any = None) -> None:
        """Note each victim's death as it happens, in a thread; `on_deadline(pending)` is
        called once at monotonic `until` with the victims still alive."""
        self._watcher = threading.Thread(target=self._watch, args=(victims, until, on_deadline),
                                         name=f"{self.name}-deaths", daemon=True)
        self._watcher.start()

    def _watch(self, victims: list[ReplicaRecord], until: float | None, on_deadline: Any) -> None:
        pending = {v.name: v for v in victims}
        while pending and not self._watch_stop.is_set():
            for name, v in list(pending.items()):
                if not group_alive(v.pgid):
                    self.note("exited", name)
                    self.mark_down(v)
                    del pending[name]
            if pending and until is not None and time.monotonic() >= until:
                until = None
                if on_deadline is not None:
                    on_deadline(list(pending.values()))
            self._watch_stop.wait(0.02)

    def settle(self) -> None:
        self.stop_watching()

    def stop_watching(self) -> None:
        self._watch_stop.set()
        if self._watcher is not None:
            self._watcher.join(5)

    def _revert(self) -> None:
        super()._revert()
        self.stop_watching()

    def casualties(self) -> list[tuple[ReplicaRecord, float]]:
        """The replicas this fault took out of service, each with when (monotonic)."""
        return [(v, self._down_at[v.name]) for v in self.victims if v.name in self._down_at]
