"""The experiment engine: baseline → inject → hold → revert → recovery, on one clock.

One run drives real load (locust, in its own process), injects one fault, samples the
load balancer, keeps the safeguard watching, and turns the measurements into SLO
results. The fault is reverted in `finally` — on success, failure, Ctrl-C and SIGTERM
(the pytest plugin turns SIGTERM into KeyboardInterrupt) — and its ledger entry stays
open until the undo ran, so `inferchaos recover` can finish the job after a SIGKILL.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from faults.base import Fault, FaultEvent
from faults.ledger import Ledger
from faults.undo import step
from load.records import RequestRecord
from load.runner import LoadProfile, LoadRunner
from probes.failover import Failover, analyse
from probes.lb_sampler import LbSample, LbSampler
from probes.safeguard import Safeguard
from probes.slo import ExperimentSlo
from probes.verdict import SloResult, judge, observed_from_window, recovery_time, verdict
from probes.window import WindowStats, percentile, window
from targets.local.cluster import LocalCluster
from targets.local.processes import start_time

TICK_S = 0.25
PHASES = ("baseline", "inject", "hold", "revert", "recovery")


@dataclass(frozen=True)
class Phase:
    name: str
    start: float
    end: float


@dataclass
class ExperimentResult:
    id: str
    fault: str
    verdict: str  # pass | fail | aborted | error
    slos: list[SloResult] = field(default_factory=list)
    requests: int = 0
    phases: list[Phase] = field(default_factory=list)
    failover: list[Failover] = field(default_factory=list)
    events: list[FaultEvent] = field(default_factory=list)
    baseline: WindowStats | None = None
    during: WindowStats | None = None
    aborted: str | None = None
    error: str | None = None
    request_log: str = ""
    lb_samples: list[LbSample] = field(default_factory=list, repr=False)
    records: list[RequestRecord] = field(default_factory=list, repr=False)
    #: monotonic and wall clock at the start, to turn run times into dates at the edges.
    t0: float = 0.0
    wall0: float = 0.0

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
        if self.verdict == "aborted":
            return f"{self.id}: aborted ({self.aborted}); the fault was reverted first"
        if self.verdict == "error":
            return f"{self.id}: error: {self.error}"
        parts = [f"{s.name} {s.objective} ({s.detail})" for s in self.breached()]
        return f"{self.id}: SLO breached: " + "; ".join(parts)

    def to_summary(self) -> dict:
        return {
            "id": self.id, "fault": self.fault, "verdict": self.verdict,
            "slos": [{"name": s.name, "objective": s.objective, "observed": s.observed, "ok": s.ok,
                      **({"optional": True} if s.optional else {}), "detail": s.detail} for s in self.slos],
            "requests": self.requests, "fault_window": self.fault_window,
            "phases": [{"name": p.name, "start_s": round(p.start - self.t0, 3), "end_s": round(p.end - self.t0, 3)}
                       for p in self.phases],
            "failover": [asdict(f) | {"died_at": round(f.died_at - self.t0, 3),
                                      "ejected_at": None if f.ejected_at is None else round(f.ejected_at - self.t0, 3)}
                         for f in self.failover],
            "aborted": self.aborted, "error": self.error, "request_log": self.request_log,
        }


class Experiment:
    def __init__(self, id: str, target: LocalCluster, fault: Fault, slo: ExperimentSlo, out_dir: Path,
                 ledger: Ledger, say: Callable[[str], None] = print) -> None:
        self.id, self.target, self.fault, self.slo = id, target, fault, slo
        self.out_dir, self.ledger, self.say = out_dir, ledger, say
        self.safeguard = Safeguard(slo.safeguard.max_error_rate, slo.safeguard.window_s, slo.safeguard.max_p99_ms)
        self.phases: list[Phase] = []
        self._records: list[RequestRecord] = []

    def run(self) -> ExperimentResult:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        p = self.slo.phases
        profile = LoadProfile(users=p.users, spawn_rate=p.spawn_rate, processes=p.processes)
        load = LoadRunner(self.target.lb_url, self.out_dir / "requests.jsonl", profile,
                          log_locust_to=self.out_dir / "locust.log")
        sampler = LbSampler(self.target.admin())
        result = ExperimentResult(self.id, self.fault.name, "error", t0=time.monotonic(), wall0=time.time(),
                                  request_log=str(self.out_dir / "requests.jsonl"))
        load_entry = None
        try:
            self.say(f"{self.id}: plan: " + "; ".join(self.fault.plan()))
            self.fault.prepare()
            sampler.start()
            load.start()
            load_entry = self.ledger.applied(
                "load", [step("end_group", pgid=load.pgid, started=start_time(load.pgid), what="locust")],
                {"kind": "process"}, experiment=self.id)
            self._tail = load.tail()
            self._phase("baseline", p.baseline_s)
            self._phase("inject", 0, action=self.fault.inject, arm=True)
            if not self.safeguard.tripped:
                self._phase("hold", p.hold_s)
            self._phase("revert", 0, action=self.fault.revert)
            self._phase("recovery", p.recovery_window_s)
        except KeyboardInterrupt:
            result.error = "interrupted"
            raise
        except Exception as exc:  # noqa: BLE001 - the run is reported as "error", after cleanup
            result.error = f"{type(exc).__name__}: {exc}"
        finally:
            try:
                self.fault.revert()
            finally:
                records = load.stop()
                if load_entry is not None:
                    self.ledger.reverted(load_entry)
                result.lb_samples = sampler.stop()
        result.records = records
        result.phases = list(self.phases)
        result.events = list(self.fault.events)
        result.requests = len(records)
        if result.error is None:
            self._evaluate(result)
        return result

    # ----------------------------------------------------------------------------- phases
    def _phase(self, name: str, seconds: float, action: Callable[[], None] | None = None,
               arm: bool = False) -> None:
        start = time.monotonic()
        self.say(f"{self.id}: {name}" + (f" for {seconds:g}s" if seconds else ""))
        if action is not None:
            action()
        self._armed = self._armed or arm if hasattr(self, "_armed") else arm
        end = start + seconds
        last_line = 0.0
        while True:
            self._watch()
            now = time.monotonic()
            if now >= end or (self.safeguard.tripped and self.fault.applied):
                break
            if now - last_line >= 2.0:
                self.say(self._progress(name, now - start, seconds))
                last_line = now
            time.sleep(min(TICK_S, max(0.0, end - now)))
        if self.safeguard.tripped and self.fault.applied:
            self.say(f"{self.id}: {self.safeguard.tripped}: reverting the fault now")
            self.fault.revert()
        self.phases.append(Phase(name, start, time.monotonic()))

    def _watch(self) -> None:
        new = self._tail.read_new()
        self._records.extend(new)
        self.safeguard.feed(new)
        if getattr(self, "_armed", False) and self.fault.applied:
            self.safeguard.check()

    def _progress(self, phase: str, elapsed: float, total: float) -> str:
        recent = self.safeguard.recent()
        secs = self.safeguard.window_s
        errors = sum(not r.ok for r in recent)
        p99 = percentile([r.latency_s * 1000 for r in recent], 99)
        ready = sum(r.phase == "ready" for r in self.target.replicas())
        p99_text = f"{p99:.0f} ms" if p99 is not None else "-"
        return (f"{self.id}: {phase} {elapsed:4.1f}/{total:g}s  {len(recent) / secs:6.1f} req/s  "
                f"errors {errors}  p99 {p99_text}  replicas ready {ready}")

    # ----------------------------------------------------------------------------- verdict
    def _evaluate(self, result: ExperimentResult) -> None:
        inject, revert, recovery = result.phase("inject"), result.phase("revert"), result.phase("recovery")
        baseline = result.phase("baseline")
        assert inject and revert and recovery and baseline
        end = recovery.end
        result.baseline = window(result.records, baseline.start, inject.start)
        result.during = window(result.records, inject.start, end)
        observed = observed_from_window(result.during)
        reasons: dict[str, str] = {}
        if result.during.requests == 0:
            reasons.update({k: "no requests in the fault window" for k in observed})
        observed["recovery_s"] = recovery_time(result.records, revert.end, end, self.slo.objectives)
        if observed["recovery_s"] is None:
            reasons["recovery_s"] = "errors or p99 never came back within objective before the run ended"
        result.failover = self._failover(result)
        if result.failover:
            values = [f.failover_s for f in result.failover]
            observed["failover_s"] = None if None in values else max(v for v in values if v is not None)
            if observed["failover_s"] is None:
                reasons["failover_s"] = "the LB never stopped routing to a removed replica"
        else:
            reasons["failover_s"] = f"{self.fault.name} removed no replica"
        result.slos = judge(self.slo.objectives, observed, reasons)
        if self.safeguard.tripped:
            result.verdict, result.aborted = "aborted", self.safeguard.tripped
        else:
            result.verdict = verdict(result.slos)

    def _failover(self, result: ExperimentResult) -> list[Failover]:
        casualties = getattr(self.fault, "casualties", lambda: [])()
        state = self.target.state
        everyone = state.replicas + state.history
        out = []
        for victim, died_at in casualties:
            later = sorted((r for r in everyone if r.name != victim.name and r.started_at >= victim.started_at
                            and r.slot == victim.slot), key=lambda r: r.started_at)
            promoted = [r for r in state.replicas if r.slot == victim.slot and r.name != victim.name]
            replacement = (promoted or later or [None])[0]
            out.append(analyse(victim.name, victim.port, died_at, result.lb_samples, result.records,
                               replacement.name if replacement else None))
        return out
