"""The probes every run has whatever its target (requests, load, recovery, answers, PromQL),
each both ways: a healthy run passes, a planted breach fails with the key named, and a key it
cannot measure says why. Each judges the window its Measure declares, read from RunView.span."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from inferchaos.load.records import RequestRecord
from inferchaos.probes.answers import NO_GOLDEN_SET, ModelHealth, ModelHealthProbe
from inferchaos.probes.canary import Check
from inferchaos.probes.load_keys import LoadProbe
from inferchaos.probes.probe import RunView
from inferchaos.probes.promql import PromQLProbe
from inferchaos.probes.recovery import RecoveryProbe
from inferchaos.probes.requests import RequestProbe, Windows
from inferchaos.probes.slo import Objective, Relative
from inferchaos.probes.verdict import judge, resolve, verdict
from inferchaos.probes.window import window

#: baseline 0-4 s, inject at 4, hold to 8, revert at 8, recovery 8-14 s
PHASES = {"baseline": (0.0, 4.0), "inject": (4.0, 4.0), "hold": (4.0, 8.0), "revert": (8.0, 8.0),
          "recovery": (8.0, 14.0)}
OBJECTIVES = [Objective("availability", ">=", 0.99, "fraction"), Objective("p99_ms", "<=", 500, "ms")]


def traffic(t0: float, t1: float, rate: float = 50, latency_s: float = 0.005, ok: bool = True,
            **kw: Any) -> list[RequestRecord]:
    """Requests sent mid-interval and answered well inside it, so none straddles a phase edge."""
    n = round((t1 - t0) * rate)
    return [RequestRecord(start=t0 + (i + 0.5) / rate, wall=t0 + (i + 0.5) / rate, latency_s=latency_s, kind="infer",
                          status=200 if ok else 503, ok=ok, error=None if ok else "HTTP 503", **kw) for i in range(n)]


def view(records: list[RequestRecord], objectives: list[Objective] = OBJECTIVES) -> RunView:
    return RunView(records, PHASES, t0=0.0, wall0=1000.0, objectives=objectives)


def measured(probe: Any, run: RunView) -> dict[str, Any]:
    return {m.key: m for m in probe.observe(run)}


# ----------------------------------------------------------------------- spans
def test_spans_are_the_declared_windows_on_the_run_clock():
    run = view([])
    assert run.span("baseline") == (0.0, 4.0) and run.span("fault") == (4.0, 8.0)
    assert run.span("after_inject") == (4.0, 14.0) and run.span("run") == (0.0, 14.0)
    assert run.span("recovery") == (8.0, 14.0)


# ----------------------------------------------------------------------- requests
def test_requests_judge_the_fault_window_and_keep_all_three():
    records = traffic(0, 14)
    probe = RequestProbe()
    got = measured(probe, view(records))
    assert got["availability"].value == 1.0 and got["p99_ms"].value == 5.0
    report = probe.report()
    assert isinstance(report, Windows)
    assert (report.baseline.requests, report.during.requests, report.recovery.requests) == (200, 200, 300)


def test_requests_breach_inside_the_fault_window_fails_by_name_and_outside_it_does_not():
    bad = traffic(0, 4) + traffic(4, 8, ok=False) + traffic(8, 14)
    got = measured(RequestProbe(), view(bad))
    results = judge(OBJECTIVES, {k: m.value for k, m in got.items()})
    assert verdict(results) == "fail" and [r.name for r in results if not r.ok] == ["availability", "p99_ms"]
    # the same failures during the baseline are not the fault's
    before = traffic(0, 4, ok=False) + traffic(4, 14)
    got = measured(RequestProbe(), view(before))
    assert verdict(judge(OBJECTIVES, {k: m.value for k, m in got.items()})) == "pass"


def test_requests_say_why_a_window_without_requests_is_not_measured():
    got = measured(RequestProbe(), view(traffic(0, 4)))
    assert got["availability"].value is None and got["availability"].reason == "no requests in window [4.0, 8.0)"


def test_a_relative_bound_comes_from_the_baseline_and_is_moot_without_one():
    p99 = Objective("p99_ms", "<=", 0, "ms", relative=Relative(2.0, 200.0))
    (resolved,), moot = resolve([p99], window(traffic(0, 4), 0.0, 4.0))
    assert resolved.value == 5 * 2 + 200 and moot == {}
    (_,), moot = resolve([p99], window([], 0.0, 4.0))
    assert moot == {"p99_ms": "relative to the baseline, which measured no p99_ms"}


# ----------------------------------------------------------------------- load
def test_closed_loop_load_has_no_schedule_and_its_objective_is_optional():
    got = measured(LoadProbe(open_loop=False), view(traffic(0, 14)))
    lag = got["schedule_lag_p99_ms"]
    assert lag.value is None and lag.optional and lag.reason == "closed-loop load has no schedule to keep"
    (result,) = judge([Objective("schedule_lag_p99_ms", "<=", 100, "ms", optional=lag.optional)],
                      {lag.key: None}, {lag.key: lag.reason})
    assert result.ok and result.detail.startswith("not measured (optional)")


def test_open_loop_lag_over_the_whole_run_fails_by_name_when_the_load_fell_behind():
    late = traffic(0, 4) + traffic(4, 14, lag_s=0.4)  # 400 ms behind schedule after inject
    lag = measured(LoadProbe(open_loop=True), view(late))["schedule_lag_p99_ms"]
    assert lag.value == 400.0 and not lag.optional
    (result,) = judge([Objective("schedule_lag_p99_ms", "<=", 100, "ms")], {lag.key: lag.value})
    assert not result.ok and result.name == "schedule_lag_p99_ms"
    on_time = measured(LoadProbe(open_loop=True), view(traffic(0, 14)))["schedule_lag_p99_ms"]
    assert on_time.value == 0.0


def test_goodput_counts_the_fault_window_against_the_constraints():
    records = traffic(0, 14, latency_s=0.009)  # 9 ms each, 50 a second
    ok = measured(LoadProbe(constraints={"latency_ms": 100}), view(records))["goodput_rps"]
    slow = measured(LoadProbe(constraints={"latency_ms": 5}), view(records))["goodput_rps"]
    assert ok.value == 50.0 and slow.value == 0.0


def test_stream_integrity_judges_after_inject_against_the_baseline_answers():
    same = traffic(0, 14, prompt=1, text_sha="aaa")
    probe = LoadProbe()
    assert measured(probe, view(same))["stream_integrity"].value == 1.0
    assert probe.report() is not None and probe.report().judged > 0
    changed = traffic(0, 4, prompt=1, text_sha="aaa") + traffic(4, 14, prompt=1, text_sha="bbb")
    m = measured(LoadProbe(), view(changed))["stream_integrity"]
    assert m.value == 0.0
    (result,) = judge([Objective("stream_integrity", ">=", 0.99, "fraction")], {m.key: m.value})
    assert not result.ok and result.name == "stream_integrity"


# ----------------------------------------------------------------------- recovery
def test_recovery_is_measured_from_the_revert_by_the_runs_own_objectives():
    healthy = traffic(0, 14)
    m = measured(RecoveryProbe(healthy_s=3), view(healthy))["recovery_s"]
    assert m.value == 0.0
    slow_back = traffic(0, 8) + traffic(8, 11, ok=False) + traffic(11, 14)
    m = measured(RecoveryProbe(healthy_s=3), view(slow_back))["recovery_s"]
    assert m.value == 3.0


def test_a_service_that_never_recovers_fails_recovery_by_name():
    never = traffic(0, 8) + traffic(8, 14, ok=False)
    m = measured(RecoveryProbe(healthy_s=3), view(never))["recovery_s"]
    assert m.value is None and "3 consecutive seconds" in (m.reason or "")
    (result,) = judge([Objective("recovery_s", "<=", 6, "s")], {m.key: m.value}, {m.key: m.reason})
    assert not result.ok and result.detail.startswith("not measured")


# ----------------------------------------------------------------------- answers
class StubCanary:
    """The canary's interface (start, stop -> checks) with checks given up front: the real
    canary's HTTP side is tested against the reference server in tests/cluster."""

    def __init__(self, checks: list[Check]) -> None:
        self.checks, self.started = checks, False

    def start(self) -> None:
        self.started = True

    def stop(self) -> list[Check]:
        return self.checks


def checks(t0: float, t1: float, ok: bool = True) -> list[Check]:
    return [Check(t0 + i * 0.25, "seeded-1", True, ok, "r1", "" if ok else "output[0] 0.4 != 0.1")
            for i in range(int((t1 - t0) / 0.25))]


def test_golden_answers_after_inject_pass_and_wrong_ones_fail_by_name():
    probe = ModelHealthProbe(canary=StubCanary(checks(0, 14)))  # type: ignore[arg-type]
    probe.start()
    probe.stop()
    m = measured(probe, view(traffic(0, 14)))["golden_pass_rate"]
    assert m.value == 1.0
    report = probe.report()
    assert isinstance(report, ModelHealth) and report.golden is not None and report.golden.checked == 40

    wrong = ModelHealthProbe(canary=StubCanary(checks(0, 4) + checks(4, 14, ok=False)))  # type: ignore[arg-type]
    wrong.stop()
    m = measured(wrong, view(traffic(0, 14)))["golden_pass_rate"]
    assert m.value == 0.0
    (result,) = judge([Objective("golden_pass_rate", ">=", 0.99, "fraction")], {m.key: m.value})
    assert not result.ok and result.name == "golden_pass_rate"


def test_without_a_golden_set_the_reason_says_so_and_drift_still_reads_the_log():
    probe = ModelHealthProbe(canary=None)
    same = traffic(0, 14, prediction=0.5)
    got = measured(probe, view(same))
    assert got["golden_pass_rate"].value is None and got["golden_pass_rate"].reason == NO_GOLDEN_SET
    assert got["prediction_psi"].value is not None and got["prediction_psi"].value < 0.1
    moved = traffic(0, 4, prediction=0.1) + traffic(4, 14, prediction=0.9)
    psi = measured(ModelHealthProbe(), view(moved))["prediction_psi"]
    (result,) = judge([Objective("prediction_psi", "<=", 0.25, "PSI")], {psi.key: psi.value})
    assert not result.ok and result.name == "prediction_psi"


def test_no_prediction_no_drift_with_the_reason():
    got = measured(ModelHealthProbe(), view(traffic(0, 14)))
    assert got["prediction_psi"].value is None and "(infer answers' predictions)" in (got["prediction_psi"].reason or "")


# ----------------------------------------------------------------------- PromQL
def test_promql_without_a_prometheus_says_how_to_get_one():
    class Prom:
        key, query, reduce = "server_p99", "histogram_quantile(0.99, x)", "max"

    got = PromQLProbe(objectives=(Prom(),), url=None).observe(view([]))
    assert [(m.key, m.value) for m in got] == [("server_p99", None)] and "--prometheus" in (got[0].reason or "")
    assert PromQLProbe().observe(view([])) == []


def test_resolved_objectives_reach_the_probes_that_judge_against_them():
    """recovery_s is judged by the run's resolved p99 objective, not the file's formula."""
    p99 = Objective("p99_ms", "<=", 0, "ms", relative=Relative(1.0, 10.0))  # baseline + 10 ms: 15 ms
    objectives, _ = resolve([OBJECTIVES[0], p99], window(traffic(0, 4), 0.0, 4.0))
    slower = traffic(0, 8) + traffic(8, 14, latency_s=0.1)  # 100 ms after the revert: within the file's 500 ms
    assert measured(RecoveryProbe(), view(slower))["recovery_s"].value == 0.0
    m = measured(RecoveryProbe(), replace(view(slower), objectives=objectives))["recovery_s"]
    assert m.value is None
