"""The experiment engine: baseline → inject → hold → revert → recovery, on one clock.

One run drives real load (locust, in its own process), injects one fault, samples the
load balancer, keeps the safeguard watching, and turns the measurements into SLO
results. The fault is reverted in `finally` — on success, failure, Ctrl-C and SIGTERM
(the pytest plugin turns SIGTERM into KeyboardInterrupt) — and its ledger entry stays
open until the undo ran, so `inferchaos recover` can finish the job after a SIGKILL.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, ContextManager

from faults.base import Fault, FaultEvent, RunContext
from faults.ledger import Ledger
from faults.undo import step
from inferchaos.progress import Progress, Status
from load.records import RequestRecord
from load.runner import LoadProfile, LoadRunner, RequestLogTail
from probes.cold_start import ColdStart, cold_starts, worst
from probes.failover import Failover, analyse
from probes.queue_time import QueueTime, over_window
from probes.queue_time import scrape as scrape_queues
from probes.lb_sampler import LbSample, LbSampler
from probes.safeguard import Safeguard
from probes.slo import ExperimentSlo
from probes.verdict import SloResult, judge, observed_from_window, reasons_from_window, recovery_time, verdict
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
    #: server-side queue time over inject -> revert (None: not measured).
    queue: QueueTime | None = None
    cold_starts: list[ColdStart] = field(default_factory=list)
    #: what the fault measured on the target to show it took effect.
    figures: dict = field(default_factory=dict)
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
        message = f"{self.id}: SLO breached: " + "; ".join(parts)
        if self.stale_but_up():
            message += ("; the service was up but serving stale answers: every request got a valid 200, "
                        "with features older than the freshness objective")
        return message

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
            "id": self.id, "fault": self.fault, "verdict": self.verdict,
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
            "lb_changes": self.lb_changes(),
            "clock": {"t0_monotonic": self.t0, "wall0": self.wall0},
            "aborted": self.aborted, "error": self.error, "request_log": self.request_log,
        }


class Experiment:
    def __init__(self, id: str, target: LocalCluster, fault: Fault, slo: ExperimentSlo, out_dir: Path,
                 ledger: Ledger, progress: Progress | None = None,
                 scope: Callable[[str], ContextManager[object]] = lambda title: contextlib.nullcontext()) -> None:
        """`scope(title)` wraps each stage of the run (steady state, each phase): the
        report layer turns them into Allure steps without the engine knowing of Allure."""
        self.id, self.target, self.fault, self.slo = id, target, fault, slo
        self.out_dir, self.ledger = out_dir, ledger
        self.progress = progress or Progress.to_stream()
        self.say, self.scope = self.progress.say, scope
        self.safeguard = Safeguard(slo.safeguard.max_error_rate, slo.safeguard.window_s, slo.safeguard.max_p99_ms)
        self.phases: list[Phase] = []
        self._records: list[RequestRecord] = []
        self._tails: list[RequestLogTail] = []
        self._queue_before: dict = {}

    def run(self) -> ExperimentResult:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        p = self.slo.phases
        profile = LoadProfile(users=p.users, spawn_rate=p.spawn_rate, processes=p.processes)
        load = LoadRunner(self.target.lb_url, self.out_dir / "requests.jsonl", profile,
                          log_locust_to=self.out_dir / "locust.log")
        sampler = LbSampler(self.target.admin())
        result = ExperimentResult(self.id, self.fault.name, "error", t0=time.monotonic(), wall0=time.time(),
                                  request_log=str(self.out_dir / "requests.jsonl"))
        self.fault.run = RunContext(self.target.lb_url, self.out_dir, p.users, p.spawn_rate)
        load_entry = None

        def journal_load(pgid: int) -> None:
            nonlocal load_entry
            undo = [step("end_group", pgid=pgid, started=start_time(pgid), what="locust")]
            if load_entry is None:
                load_entry = self.ledger.applied("load", undo, {"kind": "process"}, experiment=self.id)
            else:
                load_entry = self.ledger.extend(load_entry, undo)

        try:
            with self.scope("steady state: every replica ready and in rotation"):
                self.target.wait_steady()
            plan = self.fault.plan()
            self.say(f"{self.id}: plan: " + "; ".join(plan))
            with self.scope("prepare: " + "; ".join(plan)):
                self.fault.prepare()
            sampler.start()
            load.start(on_spawn=journal_load)
            self._tails = [load.tail()]
            self._phase("baseline", p.baseline_s)
            self._queue_before = self._scrape_queues()
            self._phase("inject", 0, action=self.fault.inject, arm=True)
            if not self.safeguard.tripped:
                self._phase("hold", p.hold_s)
            result.queue = over_window(self._queue_before, self._scrape_queues())
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
                self.progress.done()
        for extra in self.fault.load_runners():
            records = records + extra.records()
        records.sort(key=lambda r: r.start)
        result.records = records
        result.phases = list(self.phases)
        result.events = list(self.fault.events)
        result.requests = len(records)
        result.figures = self.fault.figures()
        if result.error is None:
            self._evaluate(result)
        return result

    def _scrape_queues(self) -> dict:
        return scrape_queues({r.name: f"http://127.0.0.1:{r.port}/metrics" for r in self.target.state.replicas
                              if r.phase == "ready"})

    # ----------------------------------------------------------------------------- phases
    def _phase(self, name: str, seconds: float, action: Callable[[], None] | None = None,
               arm: bool = False) -> None:
        title = f"{name}" + (f" for {seconds:g}s" if seconds else "")
        with self.scope(title):
            start = time.monotonic()
            self.say(f"{self.id}: {title}")
            if action is not None:
                action()
            self._armed = self._armed or arm if hasattr(self, "_armed") else arm
            end = start + seconds
            first = True
            while True:
                self._watch()
                now = time.monotonic()
                if now >= end or (self.safeguard.tripped and self.fault.applied):
                    break
                if seconds and now - start >= 1.0:  # a status needs a second of requests behind it
                    self.progress.status(self._status(name, end - now), force=first)
                    first = False
                time.sleep(min(TICK_S, max(0.0, end - now)))
            if self.safeguard.tripped and self.fault.applied:
                self.say(f"{self.id}: {self.safeguard.tripped}: reverting the fault now")
                self.fault.revert()
            self.phases.append(Phase(name, start, time.monotonic()))

    def _watch(self) -> None:
        known = {t.prefix for t in self._tails}
        for extra in self.fault.load_runners():
            if str(extra.log_path) not in known:
                self._tails.append(extra.tail())
        new = [r for tail in self._tails for r in tail.read_new()]
        self._records.extend(new)
        self.safeguard.feed(new)
        if getattr(self, "_armed", False) and self.fault.applied:
            self.safeguard.check()

    def _status(self, phase: str, left_s: float) -> Status:
        recent = self.safeguard.recent()
        replicas = self.target.replicas()
        return Status(self.id, phase, max(0.0, left_s), len(recent) / self.safeguard.window_s,
                      sum(not r.ok for r in recent), percentile([r.latency_s * 1000 for r in recent], 99),
                      sum(r.phase == "ready" for r in replicas), self.target.spec.replicas)

    # ----------------------------------------------------------------------------- verdict
    def _evaluate(self, result: ExperimentResult) -> None:
        inject, revert, recovery = result.phase("inject"), result.phase("revert"), result.phase("recovery")
        baseline = result.phase("baseline")
        assert inject and revert and recovery and baseline
        end = recovery.end
        result.baseline = window(result.records, baseline.start, inject.start)
        result.during = window(result.records, inject.start, end)
        observed = observed_from_window(result.during)
        reasons = reasons_from_window(result.during)
        observed["recovery_s"] = recovery_time(result.records, revert.end, end, self.slo.objectives)
        if observed["recovery_s"] is None:
            reasons["recovery_s"] = "errors or p99 never came back within objective before the run ended"
        result.failover = self._failover(result)
        if result.failover:
            values = [f.failover_s for f in result.failover]
            observed["failover_s"] = None if None in values else max(v for v in values if v is not None)
            if observed["failover_s"] is None:
                reasons["failover_s"] = "the LB never stopped routing to a removed replica"
            took = [f.replacement_traffic_s for f in result.failover]
            observed["replacement_s"] = None if None in took else max(t for t in took if t is not None)
            if observed["replacement_s"] is None:
                reasons["replacement_s"] = "no replacement served a valid answer before the run ended"
        else:
            reasons["failover_s"] = reasons["replacement_s"] = f"{self.fault.name} removed no replica"
        wall = lambda t: result.wall0 + (t - result.t0)  # noqa: E731
        state = self.target.state
        result.cold_starts = cold_starts(state.replicas + state.history, wall(inject.start), wall(end))
        observed["cold_start_s"], why = worst(result.cold_starts)
        if why:
            reasons["cold_start_s"] = why
        observed["queue_p99_ms"] = result.queue.p99_ms if result.queue else None
        if result.queue is None:
            reasons["queue_p99_ms"] = f"no replica reported {'vllm:request_queue_time_seconds'} over the fault window"
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
            candidates = promoted + later
            served = {r.replica for r in result.records if r.ok and r.start >= died_at}
            # a crash-looping replacement never serves; the one that did is the replacement
            replacement = next((r for r in candidates if r.name in served), candidates[0] if candidates else None)
            out.append(analyse(victim.name, victim.port, died_at, result.lb_samples, result.records,
                               replacement.name if replacement else None))
        return out
