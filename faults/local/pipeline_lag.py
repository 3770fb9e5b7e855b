"""Data-pipeline lag: the feature pipeline stops and/or reads from the feature store get slow.

Either way the service stays up and answers 200 — with features that grow older by the
second. That is the failure uptime checks miss, so the experiment is judged on the age
of the features behind each answer (`freshness_s`), not only on errors and latency.

- `stop`: SIGSTOP the pipeline process (SIGCONT on revert) — a stuck job, as when a
  streaming job stalls or a batch pipeline is scaled to zero.
- `slow_reads`: the proxy route to the feature store gets `read_latency_ms` (above the
  server's feature timeout, so every read times out and the server falls back to the
  last features it had).
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import Any

import httpx

from inferchaos.faults.base import Landing
from inferchaos.faults.local.base import LocalFault, route_shows, timed_read
from inferchaos.faults.registry import executes
from inferchaos.faults.undo import process_ref, step
from inferchaos.targets.local.depproxy import Toxics
from inferchaos.targets.local.processes import signal_group, stopped

@executes("pipeline_lag", "local")
@dataclass
class PipelineLag(LocalFault):
    age_at_inject_s: float | None = field(default=None, init=False)
    age_at_revert_s: float | None = field(default=None, init=False)

    @property
    def stops(self) -> bool:
        return self.args.mode in ("stop", "both")

    @property
    def slow(self) -> bool:
        return self.args.mode in ("slow_reads", "both")

    def _plan(self) -> list[str]:
        lines = []
        if self.stops:
            p = self.cluster.state.service("pipeline")
            lines.append(f"SIGSTOP the feature pipeline (pid {p.pid}); SIGCONT on revert")
        if self.slow:
            lines.append(f"add {self.args.read_latency_ms:g} ms to every read from the feature store "
                         f"(proxy {self.cluster.state.proxy_url}); clear on revert")
        return lines

    def _inject(self) -> None:
        self.age_at_inject_s = self.feature_age()
        if self.stops:
            p = self.cluster.state.service("pipeline")
            self.journal([step("signal_process", **process_ref(p.pid, self.cluster.state.mark), sig="SIGCONT",
                               what="feature pipeline")])
            signal_group(p.pgid, signal.SIGSTOP)
            self.note("sigstop", "pipeline")
        if self.slow:
            self.degrade("feature_store", Toxics(latency_ms=self.args.read_latency_ms))

    def landed(self) -> Landing:
        """The pipeline stopped (state T) and/or the store's reads slowed (the route read
        back, and one read through it timed)."""
        seen = []
        if self.stops:
            p = self.cluster.state.service("pipeline")
            if not stopped(p.pid):
                return Landing(False, f"the feature pipeline (pid {p.pid}) is not stopped")
            seen.append(f"feature pipeline stopped (pid {p.pid}, state T)")
        if self.slow:
            toxics = Toxics(latency_ms=self.args.read_latency_ms)
            route = route_shows(self.dependency_route("feature_store"), toxics, "feature store")
            if not route.ok:
                return route
            took = timed_read(self.cluster.state.via_proxy["feature_store"])
            if took["health_ms"] < 0.5 * self.args.read_latency_ms and not took["timed_out"]:
                return Landing(False, f"a read through the proxy took {took['health_ms']} ms, "
                                      f"not +{self.args.read_latency_ms:g} ms")
            seen.append(f"a feature-store read through the proxy took {took['health_ms']} ms")
        return Landing(True, "; ".join(seen))

    def feature_age(self) -> float | None:
        """Age of the newest features in the store itself (read directly, not through the proxy)."""
        url = self.cluster.state.feature_store_url
        try:
            body = httpx.get(f"{url}/features/default", timeout=2.0).json()
            return round(float(body["age_s"]), 3)
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None

    def _revert(self) -> None:
        self.age_at_revert_s = self.feature_age()
        super()._revert()

    def figures(self) -> dict[str, Any]:
        return {"store_feature_age_at_inject_s": self.age_at_inject_s,
                "store_feature_age_at_revert_s": self.age_at_revert_s}
