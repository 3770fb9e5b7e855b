"""What one experiment run produced: phases, verdicts, probe figures, and summary.json's entry.

Data only, kept apart from the engine that fills it: the plugin, the reports and the CLI
read results without importing how they are made.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from inferchaos.faults.base import FaultEvent
from inferchaos.load.records import RequestRecord
from inferchaos.probes.answers import ModelHealth
from inferchaos.probes.autoscaling import ScaleOut, ScaleSample, Scaling
from inferchaos.probes.canary import GoldenWindow
from inferchaos.probes.cold_start import ColdStart, ColdStarts
from inferchaos.probes.failover import Failover, Failovers
from inferchaos.probes.gpu import GpuRun
from inferchaos.probes.integrity import Integrity
from inferchaos.probes.lb_sampler import LbSample
from inferchaos.probes.model_health import DriftResult
from inferchaos.probes.queue_time import QueueTime
from inferchaos.probes.requests import Series, Windows
from inferchaos.probes.verdict import SloResult
from inferchaos.probes.window import WindowStats

R = TypeVar("R")


@dataclass(frozen=True)
class Phase:
    name: str
    start: float
    end: float


@dataclass
class ExperimentResult:
    id: str
    fault: str
    verdict: str  # pass | fail | inconclusive | aborted | error
    slos: list[SloResult] = field(default_factory=list)
    requests: int = 0
    phases: list[Phase] = field(default_factory=list)
    events: list[FaultEvent] = field(default_factory=list)
    #: the baseline as the steady-state hypothesis judged it (the requests probe's own
    #: windows replace it once the run is judged).
    steady_baseline: WindowStats | None = None
    aborted: str | None = None
    error: str | None = None
    #: why the run proves nothing either way: the steady state did not hold, or the fault
    #: did not land. Such a run fails the test and the gate, and is no verdict on the fault.
    inconclusive: str | None = None
    #: the baseline against the steady-state hypothesis (judged before anything is injected).
    steady_state: list[SloResult] = field(default_factory=list)
    #: the fault's effect as read back from the target: landed, evidence, after_s.
    landing: dict | None = None
    request_log: str = ""
    #: what the fault measured on the target to show it took effect.
    figures: dict = field(default_factory=dict)
    #: the run step by step as the clients saw it (what the timeline draws).
    series: Series | None = None
    #: each probe's own report, by probe name (probes/*: Windows, Failovers, ModelHealth, GpuRun, ...).
    reports: dict[str, Any] = field(default_factory=dict, repr=False)
    #: GPU-seconds, their cost (with --gpu-hour-price) and the SLO minutes lost (inferchaos.costing).
    cost: dict | None = None
    #: what the experiment says of itself (severity, owner, model, runbook link).
    labels: dict = field(default_factory=dict)
    records: list[RequestRecord] = field(default_factory=list, repr=False)
    #: the load as it ran: "open loop, 100 req/s (poisson)" or "closed loop, 8 users", and the workload.
    load: dict = field(default_factory=dict)
    #: every measure taken (inject -> end unless its key says otherwise), objective or not.
    observed: dict = field(default_factory=dict)
    #: monotonic and wall clock at the start, to turn run times into dates at the edges.
    t0: float = 0.0
    wall0: float = 0.0

    def report(self, kind: type[R]) -> R | None:
        """The report of type `kind` a probe of this run made (None: no such probe ran)."""
        return next((r for r in self.reports.values() if isinstance(r, kind)), None)

    # What the reports read, each from the probe that measured it.
    @property
    def windows(self) -> Windows | None:
        return self.report(Windows)

    @property
    def baseline(self) -> WindowStats | None:
        return self.windows.baseline if self.windows else self.steady_baseline

    @property
    def during(self) -> WindowStats | None:
        return self.windows.during if self.windows else None

    @property
    def recovery(self) -> WindowStats | None:
        """revert -> end, judged on its own by recovery_s."""
        return self.windows.recovery if self.windows else None

    @property
    def failover(self) -> list[Failover]:
        found = self.report(Failovers)
        return list(found.results) if found else []

    @property
    def lb_samples(self) -> list[LbSample]:
        found = self.report(Failovers)
        return list(found.samples) if found else []

    @property
    def queue(self) -> QueueTime | None:
        """Server-side queue time over inject -> revert (None: not measured)."""
        return self.report(QueueTime)

    @property
    def cold_starts(self) -> list[ColdStart]:
        found = self.report(ColdStarts)
        return list(found.starts) if found else []

    @property
    def golden(self) -> GoldenWindow | None:
        """The golden-set canary over inject -> end."""
        health = self.report(ModelHealth)
        return health.golden if health else None

    @property
    def drift(self) -> DriftResult | None:
        """Prediction drift, fault window against baseline."""
        health = self.report(ModelHealth)
        return health.drift if health else None

    @property
    def gpu(self) -> GpuRun | None:
        """NVML through the run; `measured` False with the reason on a machine without a GPU."""
        return self.report(GpuRun)

    @property
    def scale_out(self) -> ScaleOut | None:
        """The autoscaler through the run (None: the target reports none)."""
        found = self.report(Scaling)
        return found.scale_out if found else None

    @property
    def scale_samples(self) -> list[ScaleSample]:
        found = self.report(Scaling)
        return list(found.samples) if found else []

    @property
    def integrity(self) -> dict | None:
        """Stream integrity over inject -> end, as summary.json has it."""
        found = self.report(Integrity)
        return None if found is None else asdict(found) | {"rate": found.rate}

    def phase(self, name: str) -> Phase | None:
        return next((p for p in self.phases if p.name == name), None)

    @property
    def fault_window(self) -> dict[str, float | None]:
        """Seconds from the run's start: when the fault took effect and when it was undone."""
        inject, revert = self.phase("inject"), self.phase("revert")
        rel = lambda t: None if t is None else round(t - self.t0, 3)  # noqa: E731
        return {"inject_s": rel(inject.start if inject else None), "revert_s": rel(revert.end if revert else None),
                "inject_wall": None if not inject else round(self.wall0 + inject.start - self.t0, 3),
                "revert_wall": None if not revert else round(self.wall0 + revert.end - self.t0, 3)}

    def breached(self) -> list[SloResult]:
        return [s for s in self.slos if not s.ok]

    def failure_message(self) -> str:
        if self.verdict == "inconclusive":
            return f"{self.id}: inconclusive: {self.inconclusive}"
        if self.verdict == "aborted":
            return f"{self.id}: aborted ({self.aborted}); the fault was reverted first"
        if self.verdict == "error":
            return f"{self.id}: error: {self.error}"
        parts = [f"{s.name} {s.objective} ({s.detail})" for s in self.breached()]
        message = f"{self.id}: SLO breached: " + "; ".join(parts)
        names = {s.name for s in self.breached()}
        if "golden_pass_rate" in names and self.golden and self.golden.examples:
            message += "; wrong golden answers: " + "; ".join(self.golden.examples)
        if names & {"prediction_psi", "prediction_ks_pvalue"} and self.drift and self.drift.measured:
            message += f"; predictions drifted: {self.drift.line()}"
        if self.stale_but_up():
            message += ("; the service was up but serving stale answers: every request got a valid 200, "
                        "with features older than the freshness objective")
        return message

    def model_health(self) -> dict:
        golden = None
        if self.golden is not None:
            golden = asdict(self.golden) | {"pass_rate": self.golden.pass_rate}
        drift = None
        if self.drift is not None:
            drift = {k: getattr(self.drift, k) for k in ("measured", "reason", "baseline_n", "current_n", "psi",
                                                          "band", "ks_statistic", "ks_pvalue")}
        return {"golden": golden, "drift": drift}

    def autoscaling_summary(self) -> dict | None:
        """The scale-out figures, and desired vs ready replicas as they changed."""
        if self.scale_out is None:
            return None
        changes, last = [], None
        for s in self.scale_samples:
            key = (s.enabled, s.desired, s.ready)
            if key != last:
                changes.append({"t": round(s.t - self.t0, 3), "desired": s.desired, "ready": s.ready})
                last = key
        return asdict(self.scale_out) | {"samples": changes}

    def gpu_summary(self) -> dict | None:
        """Whether NVML measured, and if not why — shown, never silently absent."""
        if self.gpu is None:
            return None
        g = self.gpu
        return {"measured": g.measured, "reason": g.reason, "devices": [asdict(d) for d in g.devices],
                "samples": len(g.samples), "xid_events": [asdict(e) | {"t": round(e.t - self.t0, 3)}
                                                          for e in g.xid_events],
                "xid_unwatched": g.xid_unwatched}

    def lb_changes(self) -> list[dict]:
        """HAProxy's view as it changed: each server's first state, then every change,
        seconds from the run's start. The samples themselves (10 a second) are too many to keep."""
        last: dict[str, str] = {}
        out = []
        for s in self.lb_samples:
            if last.get(s.server) != s.state:
                last[s.server] = s.state
                out.append({"t": round(s.t - self.t0, 3), "server": s.server, "port": s.port, "state": s.state})
        return out

    def stale_but_up(self) -> bool:
        """The case a plain uptime check hides: answers all valid, features too old."""
        by = {s.name: s for s in self.slos}
        fresh, up = by.get("freshness_s"), by.get("availability")
        return bool(fresh and not fresh.ok and fresh.observed is not None and up and up.ok)

    def to_summary(self) -> dict:
        return {
            "id": self.id, "fault": self.fault, "verdict": self.verdict, "labels": self.labels,
            "load": self.load, "integrity": self.integrity, "observed": self.observed,
            "baseline": _window_summary(self.baseline), "during": _window_summary(self.during),
            "recovery": _window_summary(self.recovery),
            "steady_state": [{"name": s.name, "objective": s.objective, "observed": s.observed, "ok": s.ok,
                              "detail": s.detail} for s in self.steady_state],
            "landing": self.landing, "inconclusive": self.inconclusive,
            "slos": [{"name": s.name, "objective": s.objective, "observed": s.observed, "ok": s.ok,
                      **({"optional": True} if s.optional else {}), "detail": s.detail} for s in self.slos],
            "requests": self.requests, "fault_window": self.fault_window,
            "phases": [{"name": p.name, "start_s": round(p.start - self.t0, 3), "end_s": round(p.end - self.t0, 3)}
                       for p in self.phases],
            "failover": [asdict(f) | {"died_at": round(f.died_at - self.t0, 3),
                                      "ejected_at": None if f.ejected_at is None else round(f.ejected_at - self.t0, 3)}
                         for f in self.failover],
            "cold_starts": [asdict(c) for c in self.cold_starts],
            "queue_time": self.queue.to_dict() if self.queue else None,
            "figures": self.figures,
            "model_health": self.model_health(),
            "gpu": self.gpu_summary(),
            "autoscaling": self.autoscaling_summary(),
            "cost": self.cost,
            "lb_changes": self.lb_changes(),
            "series": None if self.series is None else self.series.to_dict(),
            "clock": {"t0_monotonic": self.t0, "wall0": self.wall0},
            "aborted": self.aborted, "error": self.error, "request_log": self.request_log,
        }


def _window_summary(w: WindowStats | None) -> dict | None:
    """A phase's requests as the report shows them: how many, how many valid, and why not."""
    if w is None:
        return None
    return {"requests": w.requests, "ok": w.ok, "availability": w.availability, "p99_ms": w.p99_ms,
            "max_ms": w.max_ms, "errors": w.errors, "replicas": w.replicas}
