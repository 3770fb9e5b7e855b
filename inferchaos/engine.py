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
from dataclasses import replace
from pathlib import Path
from typing import Callable, ContextManager

from inferchaos.faults.base import Fault, Landing, RunContext
from inferchaos.faults.ledger import Ledger
from inferchaos.faults.undo import group_ref, step
from inferchaos.annotations import Annotations
from inferchaos.progress import Progress, Status
from inferchaos.result import ExperimentResult, Phase
from inferchaos.load.records import RequestRecord
from inferchaos.load.runner import LoadProfile, LoadRunner, RequestLogTail
from inferchaos.load.workload import Workload
from inferchaos.probes.catalogue import canary_for, run_probes, standard_probes
from inferchaos.probes.probe import Probe, RunView, measurements, unmet
from inferchaos.probes.requests import run_series
from inferchaos.probes.safeguard import Safeguard
from inferchaos.probes.slo import ExperimentSlo
from inferchaos.probes.verdict import judge, observed_from_window, reasons_from_window, resolve, verdict
from inferchaos.probes.window import percentile, window
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
        #: the target's probes and the run's own, built by run() once the load is known.
        self.probes: list[Probe] = []
        #: the probes whose capabilities the target has: the only ones started.
        self.active: list[Probe] = []
        self._started: list[Probe] = []

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
        self.probes = standard_probes(self.target, self.fault, self.prometheus_url) + run_probes(
            self.slo, profile.open_loop, canary_for(self.target, self.workload), self.prometheus_url)
        self.active = [pr for pr in self.probes if unmet(pr, self.capabilities) is None]

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
                self._collect(result)
                self.progress.done()
        for extra in self.fault.load_runners():
            records = records + extra.records()
        records.sort(key=lambda r: r.start)
        result.records = records
        result.phases = list(self.phases)
        result.series = run_series(records, result.t0, [ph.end for ph in self.phases])
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
        result.steady_baseline = stats
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
        self.fault.inject()
        if self.annotations is not None:
            self._window_open = True
            self.annotations.fault_started(self.fault.name, self.id, time.time())

    def _revert(self) -> None:
        self.fault.revert()
        if self.annotations is not None and self._window_open:
            self._window_open = False
            self.annotations.fault_ended(self.fault.name, self.id, time.time())

    def _collect(self, result: ExperimentResult) -> None:
        """Each started probe's report, kept whole in the result (the reports read them there)."""
        result.reports = {pr.name: rep for pr in self._started if (rep := pr.report()) is not None}

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
        """Every probe's measurements against the objectives, each over the window its
        Measure declares; relative bounds from the run's own baseline."""
        view = RunView(result.records, {ph.name: (ph.start, ph.end) for ph in result.phases}, result.t0, result.wall0)
        objectives, moot = resolve(self.slo.objectives, window(result.records, *view.span("baseline")))
        view = replace(view, objectives=objectives)
        observed: dict[str, float | None] = {}
        reasons: dict[str, str] = {}
        by_design: set[str] = set()
        for m in measurements(self.probes, self.capabilities, view):
            observed[m.key] = m.value
            if m.reason:
                reasons[m.key] = m.reason
            if m.optional:
                by_design.add(m.key)
        for key, why in moot.items():
            observed[key], reasons[key] = None, why
        self._collect(result)
        result.observed = {k: v for k, v in observed.items() if v is not None}
        judged = [replace(o, optional=True) if o.key in by_design else o for o in objectives]
        result.slos = judge(judged + [p.objective for p in self.slo.promql], observed, reasons)
        if self.safeguard.tripped:
            result.verdict, result.aborted = "aborted", self.safeguard.tripped
        else:
            result.verdict = verdict(result.slos)
