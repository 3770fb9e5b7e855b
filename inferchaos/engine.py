"""The experiment engine: baseline → inject → hold → revert → recovery, on one clock.

One run drives real load (locust, in its own process), injects one fault, samples the
load balancer, keeps the safeguard watching, and turns the measurements into SLO
results. The fault is reverted in `finally` — on success, failure, Ctrl-C and SIGTERM
(the pytest plugin turns SIGTERM into KeyboardInterrupt) — and its ledger entry stays
open until the undo ran, so `inferchaos recover` can finish the job after a SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, ContextManager

from inferchaos.faults.base import Fault, Landing, RunContext
from inferchaos.faults.ledger import Ledger
from inferchaos.faults.undo import group_ref, step
from inferchaos.annotations import Annotations
from inferchaos.progress import Progress, Status
from inferchaos.result import ExperimentResult, Phase
from inferchaos.load.records import RequestRecord
from inferchaos.load.runner import LoadProfile, LoadRunner, RequestLogTail
from inferchaos.load.workload import Workload
from inferchaos.probes.autoscaling import ScaleProbe
from inferchaos.probes.catalogue import standard_probes
from inferchaos.probes.probe import Probe, RunView, measurements, unmet
from inferchaos.probes.canary import Canary, golden_window
from inferchaos.probes.self_canary import SelfCanary
from inferchaos.probes.cold_start import ColdStartProbe
from inferchaos.probes.failover import FailoverProbe
from inferchaos.probes.gpu import GpuObserver
from inferchaos.probes.model_health import drift, golden_set
from inferchaos.probes.prometheus import PrometheusClient, PrometheusError, PromSlo
from inferchaos.probes.queue_time import QueueTimeProbe
from inferchaos.probes.safeguard import Safeguard
from inferchaos.probes.slo import ExperimentSlo
from inferchaos.probes.verdict import judge, observed_from_window, reasons_from_window, recovery_time, verdict
from inferchaos.probes.integrity import integrity
from inferchaos.probes.window import goodput, percentile, window
from inferchaos.targets.base import Target

TICK_S = 0.25
PHASES = ("baseline", "inject", "hold", "revert", "recovery")



#: HOST:PORT the load's master binds for workers started elsewhere (the CronJob sets it).
LOAD_MASTER_ENV = "INFERCHAOS_LOAD_MASTER"


class Experiment:
    def __init__(self, id: str, target: Target, fault: Fault, slo: ExperimentSlo, out_dir: Path,
                 ledger: Ledger, progress: Progress | None = None,
                 scope: Callable[[str], ContextManager[object]] = lambda title: contextlib.nullcontext(),
                 prometheus_url: str | None = None, annotations: Annotations | None = None,
                 workload: Workload | None = None, arrival: str = "poisson", max_in_flight: int = 1024) -> None:
        """`scope(title)` wraps each stage of the run (steady state, each phase): the
        report layer turns them into Allure steps without the engine knowing of Allure.
        `prometheus_url` answers the SLO file's PromQL objectives; `annotations` tells the
        dashboards when the fault was applied."""
        self.prometheus_url, self.annotations = prometheus_url, annotations
        self.workload, self.arrival, self.max_in_flight = workload, arrival, max_in_flight
        self._window_open = False
        self.id, self.target, self.fault, self.slo = id, target, fault, slo
        self.out_dir, self.ledger = out_dir, ledger
        self.progress = progress or Progress.to_stream()
        self.say, self.scope = self.progress.say, scope
        self.safeguard = Safeguard(slo.safeguard.max_error_rate, slo.safeguard.window_s, slo.safeguard.max_p99_ms)
        self.phases: list[Phase] = []
        self._records: list[RequestRecord] = []
        self._tails: list[RequestLogTail] = []
        self.capabilities: frozenset[str] = getattr(target, "capabilities", frozenset)()
        self.probes: list[Probe] = standard_probes(target, fault, prometheus_url)
        #: the probes whose capabilities the target has: the only ones started.
        self.active = [pr for pr in self.probes if unmet(pr, self.capabilities) is None]
        self._started: list[Probe] = []
        self._self_canary: SelfCanary | None = None

    def run(self) -> ExperimentResult:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        p = self.slo.phases
        profile = LoadProfile(users=p.users, spawn_rate=p.spawn_rate, processes=p.processes,
                              rate=p.rate or None, arrival=self.arrival, max_in_flight=self.max_in_flight,
                              workload=self.workload)
        self.profile = profile
        # in a cluster the worker Deployment connects to this master (deploy/base/locust.yaml)
        load = LoadRunner(self.target.lb_url, self.out_dir / "requests.jsonl", profile,
                          log_locust_to=self.out_dir / "locust.log", master=os.environ.get(LOAD_MASTER_ENV))
        result = ExperimentResult(self.id, self.fault.name, "error", t0=time.monotonic(), wall0=time.time(),
                                  request_log=str(self.out_dir / "requests.jsonl"))
        result.load = {"mode": "open" if profile.open_loop else "closed", "describe": profile.describe(),
                       "rate": profile.rate, "users": None if profile.open_loop else profile.users,
                       "arrival": profile.arrival if profile.open_loop else None,
                       "workload": profile.resolved().describe()}
        self.fault.run = RunContext(self.target.lb_url, self.out_dir, load=profile, runner=LoadRunner)
        load_entry = None
        canary = self._canary()

        def journal_load(pgid: int) -> None:
            nonlocal load_entry
            undo = [step("end_group", **group_ref(pgid, load.mark), what="locust")]
            load_entry = self.ledger.extend(load_entry, undo) if load_entry is not None else \
                self.ledger.applied("load", undo, {"kind": "process"}, experiment=self.id)

        try:
            with self.scope("steady state: every replica ready and in rotation"):
                self.target.wait_steady()
            plan = self.fault.plan()
            self.say(f"{self.id}: load: {profile.describe()}; {profile.resolved().describe()}")
            self.say(f"{self.id}: plan: " + "; ".join(plan))
            with self.scope("prepare: " + "; ".join(plan)):
                self.fault.prepare()
            for probe in self.active:
                probe.start()
                self._started.append(probe)
            if canary is not None:
                canary.start()
            # journalled before it exists: a crash between the spawn and its pid's journal
            # would otherwise leave locust running with nothing to undo it
            load_entry = self.ledger.applied("load", [step("end_marked", mark=load.mark, what="locust")],
                                             {"kind": "process"}, experiment=self.id)
            load.start(on_spawn=journal_load)
            self._tails = [load.tail()]
            self._phase("baseline", p.baseline_s)
            result.inconclusive = self._steady_state(result)
            if result.inconclusive is None:
                self._phase("inject", 0, action=lambda: self._land(result), arm=True)
                if result.inconclusive is None and not self.safeguard.tripped:
                    self._phase("hold", p.hold_s)
                self._phase("revert", 0, action=self._revert)
                if result.inconclusive is None:
                    self._phase("recovery", p.recovery_window_s)
        except KeyboardInterrupt:
            result.error = "interrupted"
            raise
        except Exception as exc:  # noqa: BLE001 - the run is reported as "error", after cleanup
            result.error = f"{type(exc).__name__}: {exc}"
        finally:
            try:
                self._revert()
            finally:
                records = load.stop()
                if load_entry is not None:
                    self.ledger.reverted(load_entry)
                lost = [w.describe() for w in load.lost_workers()]
                result.load["lost_workers"] = lost
                for line in lost:
                    self.say(f"{self.id}: {line}")
                if lost and result.inconclusive is None:  # measured under less load than asked
                    result.inconclusive = "the load was not what was asked: " + "; ".join(lost)
                for probe in self._started:
                    probe.stop()
                failover, gpu = self._probe(FailoverProbe), self._probe(GpuObserver)
                queue, scale = self._probe(QueueTimeProbe), self._probe(ScaleProbe)
                result.lb_samples = failover.samples if failover else []
                result.canary = canary.stop() if canary is not None else []
                result.gpu = gpu.run if gpu else None
                result.queue = queue.result if queue else None
                result.scale_samples = scale.samples if scale else []
                self.progress.done()
        for extra in self.fault.load_runners():
            records = records + extra.records()
        records.sort(key=lambda r: r.start)
        result.records = records
        result.phases = list(self.phases)
        result.events = list(self.fault.events)
        result.requests = len(records)
        result.figures = self.fault.figures()
        if hasattr(self.target, "lb_view"):  # whose view failover_s is (the data plane's, or the API's)
            result.figures = {**result.figures, "lb_view": self.target.lb_view()}
        if result.error is None and result.inconclusive is not None:
            result.verdict = "inconclusive"
        elif result.error is None:
            self._evaluate(result)
        return result

    def _steady_state(self, result: ExperimentResult) -> str | None:
        """The steady-state hypothesis, judged on the baseline before anything is injected:
        a target that already fails its objectives would blame the fault for its own
        state. Returns why the run is inconclusive, or None to go on."""
        baseline = self.phases[-1]
        self._watch()
        stats = window(self._records, baseline.start, baseline.end)
        result.baseline = stats
        result.steady_state = judge(self.slo.steady_state, observed_from_window(stats),
                                    reasons_from_window(stats)) if self.slo.steady_state else []
        failed = [r for r in result.steady_state if not r.ok]
        if not failed:
            return None
        load = self.profile.resolved().describe()
        evidence = [f"{r.name} {r.objective}: {r.detail}" for r in failed]
        if stats.requests and stats.failed:
            top = ", ".join(f"{why} x{n}" for why, n in sorted(stats.errors.items(), key=lambda kv: -kv[1])[:3])
            evidence.insert(0, f"{stats.failed / stats.requests:.0%} of {stats.requests:,} requests failed "
                               f"({top}); load: {load}")
        elif not stats.requests:
            evidence.insert(0, f"no request in the {baseline.end - baseline.start:.1f}-s baseline")
        why = "steady state not met, nothing injected: baseline: " + "; ".join(evidence)
        self.say(f"{self.id}: {why}")
        return why

    def _land(self, result: ExperimentResult) -> None:
        """Inject, then wait for the fault's effect to show on the target before the hold
        begins: a fault that did not land proves nothing, so it is reverted and the run is
        inconclusive rather than a vacuous pass."""
        self._inject()
        started = time.monotonic()
        deadline = started + self.fault.land_within_s
        while True:
            self._watch()
            try:
                landing = self.fault.landed()
            except Exception as exc:  # noqa: BLE001 - a check that cannot read the target proves nothing
                landing = Landing(False, f"could not check: {type(exc).__name__}: {exc}")
            if landing.ok or time.monotonic() >= deadline or (self.safeguard.tripped and self.fault.applied):
                break
            time.sleep(0.1)
        result.landing = {"landed": landing.ok, "evidence": landing.evidence,
                          "after_s": round(time.monotonic() - started, 3)}
        if landing.ok:
            self.say(f"{self.id}: landed: {landing.evidence}")
        elif not self.safeguard.tripped:
            result.inconclusive = (f"fault did not land ({self.fault.name}: {landing.evidence}; "
                                   f"checked for {self.fault.land_within_s:g}s)")
            self.say(f"{self.id}: {result.inconclusive}: reverting")

    def _inject(self) -> None:
        if self._self_canary is not None:
            self._self_canary.freeze()
        self.fault.inject()
        if self.annotations is not None:
            self._window_open = True
            self.annotations.fault_started(self.fault.name, self.id, time.time())

    def _revert(self) -> None:
        self.fault.revert()
        if self.annotations is not None and self._window_open:
            self._window_open = False
            self.annotations.fault_ended(self.fault.name, self.id, time.time())

    def _canary(self) -> Canary | None:
        """The reference model's golden set where the target serves it; for any other
        server, its own baseline answers to fixed requests (self-consistency)."""
        model = self.target.golden_model()
        if model is not None:
            return Canary(self.target.lb_url, golden_set(model), model)
        if self.workload is not None and (self.workload.inputs or self.workload.api != "oip"):
            self._self_canary = SelfCanary(self.target.lb_url, self.workload)
            return self._self_canary
        return None

    def _probe(self, kind: type) -> Any:
        """The probe of `kind` this run uses (None: the target lacks what it needs)."""
        return next((pr for pr in self.active if isinstance(pr, kind)), None)

    # ----------------------------------------------------------------------------- phases
    def _phase(self, name: str, seconds: float, action: Callable[[], None] | None = None,
               arm: bool = False) -> None:
        title = f"{name}" + (f" for {seconds:g}s" if seconds else "")
        with self.scope(title):
            start = time.monotonic()
            self.say(f"{self.id}: {title}")
            for probe in self.active:
                probe.mark(name)
            # armed before the action: a fault's effect can take seconds to land, and the
            # safeguard must watch while it does
            self._armed = getattr(self, "_armed", False) or arm
            if action is not None:
                action()
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
                self._revert()
            self.phases.append(Phase(name, start, time.monotonic()))

    def _watch(self) -> None:
        known = {t.prefix for t in self._tails}
        for extra in self.fault.load_runners():
            if str(extra.log_path) not in known:
                self._tails.append(extra.tail())
        new = [r for tail in self._tails for r in tail.read_new()]
        self._records.extend(new)
        self.safeguard.feed(new, [s for tail in self._tails for s in tail.in_flight()])
        if getattr(self, "_armed", False) and self.fault.applied:
            self.safeguard.check()

    def _status(self, phase: str, left_s: float) -> Status:
        recent = self.safeguard.recent()
        replicas = self.target.replicas()
        return Status(self.id, phase, max(0.0, left_s), len(recent) / self.safeguard.window_s,
                      sum(not r.ok for r in recent), percentile([r.latency_s * 1000 for r in recent], 99),
                      sum(r.phase == "ready" for r in replicas), self.target.desired_replicas())

    # ----------------------------------------------------------------------------- verdict
    def _evaluate(self, result: ExperimentResult) -> None:
        inject, revert, recovery = result.phase("inject"), result.phase("revert"), result.phase("recovery")
        baseline = result.phase("baseline")
        assert inject and revert and recovery and baseline
        end = recovery.end
        result.baseline = window(result.records, baseline.start, inject.start)
        # the fault window alone: how long the recovery window is must not dilute it
        result.during = window(result.records, inject.start, revert.end)
        result.recovery = window(result.records, revert.end, end)
        before = observed_from_window(result.baseline)
        objectives = [o.resolve(before.get(o.key)) for o in self.slo.objectives]
        observed = observed_from_window(result.during)
        reasons = reasons_from_window(result.during)
        for o in objectives:
            if o.relative is not None and o.baseline is None and o.limit is None:
                observed[o.key] = None
                reasons[o.key] = f"relative to the baseline, which measured no {o.key}"
        self._load_measures(result, observed, reasons)
        healthy = self.slo.phases.recovery_healthy_s
        observed["recovery_s"] = recovery_time(result.records, revert.end, end, objectives, healthy_s=healthy)
        if observed["recovery_s"] is None:
            reasons["recovery_s"] = (f"errors or p99 were not within objective for {healthy} consecutive seconds "
                                     f"before the run ended")
        view = RunView(result.records, {ph.name: (ph.start, ph.end) for ph in result.phases}, result.t0,
                       result.wall0, objectives)
        for m in measurements(self.probes, self.capabilities, view):
            observed[m.key] = m.value
            if m.reason:
                reasons[m.key] = m.reason
        cold, scale, failover = self._probe(ColdStartProbe), self._probe(ScaleProbe), self._probe(FailoverProbe)
        result.failover = failover.results if failover else []
        result.cold_starts = cold.starts if cold else []
        result.scale_out = scale.result if scale else None
        self._model_health(result, observed, reasons)
        if self.slo.promql:
            self._promql(result.wall0 + inject.start - result.t0, result.wall0 + end - result.t0, observed, reasons)
        result.observed = {k: v for k, v in observed.items() if v is not None}
        objectives = [replace(o, optional=True) if o.key == "schedule_lag_p99_ms" and not self.profile.open_loop
                      else o for o in objectives] + [p.objective for p in self.slo.promql]
        result.slos = judge(objectives, observed, reasons)
        if self.safeguard.tripped:
            result.verdict, result.aborted = "aborted", self.safeguard.tripped
        else:
            result.verdict = verdict(result.slos)

    def _load_measures(self, result: ExperimentResult, observed: dict, reasons: dict) -> None:
        """Whether the load was what was asked (schedule lag over the whole run), goodput
        against the SLO file's per-request constraints, and stream integrity."""
        baseline, inject, end = result.phase("baseline"), result.phase("inject"), result.phase("recovery")
        assert baseline and inject and end
        if self.profile.open_loop:
            observed["schedule_lag_p99_ms"] = window(result.records, baseline.start, end.end).schedule_lag_p99_ms
            if observed["schedule_lag_p99_ms"] is None:
                reasons["schedule_lag_p99_ms"] = "no request was scheduled"
        else:
            observed["schedule_lag_p99_ms"] = None
            reasons["schedule_lag_p99_ms"] = "closed-loop load has no schedule to keep"
        constraints = self.slo.goodput
        revert = result.phase("revert")
        assert revert
        observed["goodput_rps"] = goodput(result.records, inject.start, revert.end, constraints)
        if observed["goodput_rps"] is None:
            reasons["goodput_rps"] = "no requests after injection"
        checked = integrity(result.records, (baseline.start, inject.start), (inject.start, end.end))
        result.integrity = asdict(checked) | {"rate": checked.rate}
        observed["stream_integrity"] = checked.rate
        if checked.rate is None:
            reasons["stream_integrity"] = checked.reason

    def _promql(self, start_wall: float, end_wall: float, observed: dict, reasons: dict) -> None:
        """The SLO file's PromQL objectives over inject -> end, once Prometheus has scraped
        the last second of it."""
        if not self.prometheus_url:
            for p in self.slo.promql:
                reasons[p.key] = ("no Prometheus to ask: give --prometheus URL, or a local cluster with one "
                                  "(inferchaos up --prometheus; the session's own cluster has one when the "
                                  "prometheus binary is installed)")
            return
        time.sleep(max(0.0, end_wall + 2.0 - time.time()))
        with PrometheusClient(self.prometheus_url, retry_for_s=5.0) as client:
            for p in self.slo.promql:
                try:
                    observed[p.key], why = PromSlo(p.key, p.query, p.reduce).observe(client, start_wall, end_wall)
                except PrometheusError as exc:
                    observed[p.key], why = None, str(exc)
                if why:
                    reasons[p.key] = why

    def _model_health(self, result: ExperimentResult, observed: dict, reasons: dict) -> None:
        """Right answers, not only answers: the golden set over inject -> end, and the
        predictions of the fault window (inject -> revert) against the baseline's."""
        baseline, inject, revert, recovery = (result.phase(n) for n in ("baseline", "inject", "revert", "recovery"))
        assert baseline and inject and revert and recovery
        if not result.canary:
            reasons["golden_pass_rate"] = ("no golden set: the reference model's is unknown to this server, and "
                                           "no fixed request could be built from its metadata")
        else:
            result.golden = golden_window(result.canary, inject.start, recovery.end)
            observed["golden_pass_rate"] = result.golden.pass_rate
            unstable = self._self_canary.unstable if self._self_canary is not None else []
            if result.golden.pass_rate is None:
                reasons["golden_pass_rate"] = (f"no golden-set answer came back between inject and the end "
                                               f"({result.golden.unanswered} unanswered)")
                if unstable:
                    reasons["golden_pass_rate"] += (f"; the baseline's own answers differed for {', '.join(unstable)} "
                                                    f"(not deterministic)")

        def predictions(start: float, end: float) -> list[float]:
            return [r.prediction for r in result.records if start <= r.start < end and r.ok
                    and r.prediction is not None]

        before, during = predictions(baseline.start, inject.start), predictions(inject.start, revert.end)
        result.drift = drift(before, during, bins=max(2, min(10, min(len(before), len(during)) // 25)))
        observed["prediction_psi"], observed["prediction_ks_pvalue"] = result.drift.psi, result.drift.ks_pvalue
        if not result.drift.measured:
            why = result.drift.reason.removeprefix("not measured: ")
            reasons["prediction_psi"] = reasons["prediction_ks_pvalue"] = f"{why} (infer answers' predictions)"
