"""Every verdict path both ways: a healthy window passes, a planted breach fails by name."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from inferchaos.probes.slo import Objective, load_slo
from inferchaos.probes.verdict import (
    SloResult,
    breached,
    judge,
    meets,
    observed_from_window,
    reasons_from_window,
    recovery_time,
    verdict,
)
from inferchaos.probes.window import window


@dataclass
class Rec:
    start: float
    latency_s: float
    ok: bool = True
    status: int = 200
    error: str | None = None
    ttft_s: float | None = None
    replica: str | None = "r1"
    kind: str = "infer"
    feature_age_s: float | None = None


def obj(key: str, op: str, value: float, unit: str = "ms", optional: bool = False) -> Objective:
    return Objective(key, op, value, unit, optional)


OBJECTIVES = [
    obj("availability", ">=", 0.99, "fraction"),
    obj("error_rate", "<=", 0.01, "fraction"),
    obj("p99_ms", "<=", 2000),
    obj("ttft_p99_ms", "<=", 500),
    obj("throughput_rps", ">=", 50, "req/s"),
]


def traffic(t0: float, t1: float, rate: float = 100, latency_s: float = 0.05, ok: bool = True,
            ttft_s: float | None = 0.02) -> list[Rec]:
    n = round((t1 - t0) * rate)
    return [Rec(start=t0 + i / rate, latency_s=latency_s, ok=ok, status=200 if ok else 503,
                error=None if ok else "HTTP 503", ttft_s=ttft_s, kind="stream") for i in range(n)]


def judged(recs: list[Rec], start: float = 0.0, end: float = 10.0) -> list[SloResult]:
    stats = window(recs, start, end)
    return judge(OBJECTIVES, observed_from_window(stats), reasons_from_window(stats))


def by_name(results: list[SloResult]) -> dict[str, SloResult]:
    return {r.name: r for r in results}


# --------------------------------------------------------------------------- windows judged
def test_healthy_window_passes() -> None:
    results = judged(traffic(0, 10))
    assert verdict(results) == "pass" and breached(results) == []
    assert [r.name for r in results] == [o.key for o in OBJECTIVES]
    assert by_name(results)["p99_ms"].detail == "observed 50 ms"
    assert by_name(results)["p99_ms"].objective == "<= 2000 ms"


def test_planted_p99_breach_fails_by_name() -> None:
    recs = traffic(0, 10)
    recs[::50] = [Rec(start=r.start, latency_s=2.3751, kind="stream", ttft_s=0.02) for r in recs[::50]]
    results = judged(recs)
    assert verdict(results) == "fail"
    [bad] = breached(results)
    assert (bad.name, bad.objective, bad.detail) == ("p99_ms", "<= 2000 ms", "observed 2375.1 ms")
    assert bad.observed == pytest.approx(2375.1)


def test_planted_error_breach_fails_availability_and_error_rate() -> None:
    recs = traffic(0, 10)
    recs[::20] = [Rec(start=r.start, latency_s=0.05, ok=False, status=503, kind="stream", ttft_s=0.02)
                  for r in recs[::20]]
    results = judged(recs)
    # 5% failed: beyond p99's rank, so p99 is the client timeout they count as
    assert {r.name for r in breached(results)} == {"availability", "error_rate", "p99_ms"}
    assert by_name(results)["availability"].detail == "observed 0.95"
    assert by_name(results)["error_rate"].observed == 0.05


def test_planted_throughput_breach() -> None:
    results = judged(traffic(0, 10, rate=20))
    [bad] = breached(results)
    assert bad.name == "throughput_rps" and bad.detail == "observed 20 req/s"


def test_planted_ttft_breach() -> None:
    results = judged(traffic(0, 10, latency_s=0.9, ttft_s=0.6))
    [bad] = breached(results)
    assert bad.name == "ttft_p99_ms" and bad.detail == "observed 600 ms"


def test_empty_window_fails_not_measured() -> None:
    results = judged([], 0.0, 10.0)
    assert verdict(results) == "fail"
    assert len(breached(results)) == len(OBJECTIVES)
    for r in results:
        assert r.observed is None and r.detail.startswith("not measured: no requests in window")


def test_no_streaming_requests_leaves_ttft_not_measured() -> None:
    r = by_name(judged(traffic(0, 10, ttft_s=None)))["ttft_p99_ms"]
    assert not r.ok and "not measured: no streaming request" in r.detail


# --------------------------------------------------------------------------- judge rules
def test_boundary_is_exact_both_directions() -> None:
    at = judge([obj("p99_ms", "<=", 2000), obj("availability", ">=", 0.99, "fraction")],
               {"p99_ms": 2000.0, "availability": 0.99})
    assert all(r.ok for r in at)
    # availability of exactly 99 of 100 meets 0.99
    stats = window(traffic(0, 1, rate=99) + [Rec(start=0.995, latency_s=0.01, ok=False)], 0, 1)
    assert stats.availability == 0.99
    assert judge([obj("availability", ">=", 0.99, "fraction")], observed_from_window(stats))[0].ok
    over = judge([obj("p99_ms", "<=", 2000), obj("availability", ">=", 0.99, "fraction")],
                 {"p99_ms": 2000.0000001, "availability": 0.98999999})
    assert not any(r.ok for r in over)
    assert by_name(over)["p99_ms"].detail == "observed 2000.0000001 ms"  # rounding would hide it


def test_nan_never_passes_even_optional() -> None:
    for optional in (False, True):
        [r] = judge([obj("p99_ms", "<=", 2000, optional=optional)], {"p99_ms": math.nan})
        assert not r.ok and "NaN" in r.detail
    assert not meets(obj("availability", ">=", 0.0, "fraction"), math.nan)


def test_missing_measurement_fails_unless_optional() -> None:
    objectives = [obj("failover_s", "<=", 10, "s"), obj("cold_start_s", "<=", 30, "s", optional=True)]
    results = judge(objectives, {}, {"failover_s": "no replica removed", "cold_start_s": "no replacement"})
    fo, cs = results
    assert (fo.ok, fo.optional, fo.detail) == (False, False, "not measured: no replica removed")
    assert (cs.ok, cs.optional, cs.detail) == (True, True, "not measured (optional): no replacement")
    assert verdict(results) == "fail" and breached(results) == [fo]
    [none] = judge([obj("failover_s", "<=", 10, "s")], {"failover_s": None})
    assert not none.ok and none.detail == "not measured: no measurement"


def test_optional_objective_still_fails_when_measured_and_breached() -> None:
    [r] = judge([obj("cold_start_s", "<=", 30, "s", optional=True)], {"cold_start_s": 31.0})
    assert not r.ok and r.detail == "observed 31 s"


def test_verdict_of_nothing_is_fail() -> None:
    assert verdict([]) == "fail"


def test_result_line() -> None:
    [r] = judge([obj("p99_ms", "<=", 2000)], {"p99_ms": 2375.1})
    assert r.line() == "FAIL p99_ms <= 2000 ms: observed 2375.1 ms"


def test_judges_objectives_from_the_default_file() -> None:
    slo = load_slo(None, "spot_reclamation")
    observed = {"availability": 1.0, "p99_ms": 120.0, "recovery_s": 0.0, "failover_s": 8.0,
                "schedule_lag_p99_ms": 3.0}
    assert verdict(judge(slo.objectives, observed)) == "pass"
    observed["failover_s"] = 8.5
    assert [r.name for r in breached(judge(slo.objectives, observed))] == ["failover_s"]


# --------------------------------------------------------------------------- recovery
RECOVERY = [obj("availability", ">=", 0.99, "fraction"), obj("p99_ms", "<=", 2000)]


def test_recovery_immediate_when_healthy_after_revert() -> None:
    assert recovery_time(traffic(0, 20), 10.0, 20.0, RECOVERY) == 0.0


def test_recovery_time_after_errors_then_slow_tail() -> None:
    recs = traffic(10, 13, ok=False) + traffic(13, 15, latency_s=3.0) + traffic(15, 20)
    assert recovery_time(recs, 10.0, 20.0, RECOVERY) == 5.0
    assert recovery_time(recs, 10.0, 20.0, [obj("availability", ">=", 0.99, "fraction")]) == 3.0


def test_recovery_uses_error_rate_objective_too() -> None:
    recs = traffic(10, 20)
    recs[::50] = [Rec(start=r.start, latency_s=0.05, ok=False) for r in recs[::50]]  # 2% errors
    assert recovery_time(recs, 10.0, 20.0, [obj("error_rate", "<=", 0.05, "fraction")]) == 0.0
    assert recovery_time(recs, 10.0, 20.0, [obj("error_rate", "<=", 0.01, "fraction")]) is None


def test_recovery_ignores_a_trailing_sliver_shorter_than_a_step() -> None:
    # The run's phases rarely end on a whole second: [20.0, 20.004) holds no request.
    assert recovery_time(traffic(0, 20), 10.0, 20.004, RECOVERY) == 0.0
    assert recovery_time(traffic(10, 12, ok=False) + traffic(12, 20), 10.0, 20.004, RECOVERY) == 2.0


def test_recovery_is_the_first_run_of_consecutive_healthy_seconds() -> None:
    # healthy 2 s (too short a run), sick 2 s, then healthy: recovered from 14
    recs = traffic(10, 12) + traffic(12, 14, ok=False) + traffic(14, 20)
    assert recovery_time(recs, 10.0, 20.0, RECOVERY) == 4.0
    assert recovery_time(recs, 10.0, 20.0, RECOVERY, healthy_s=2) == 0.0
    # one noisy second late in the run does not undo a recovery already shown
    relapse = traffic(10, 18) + traffic(18, 19, ok=False) + traffic(19, 20)
    assert recovery_time(relapse, 10.0, 20.0, RECOVERY) == 0.0
    # never three healthy seconds in a row: not recovered
    flapping = [r for i in range(10) for r in traffic(10 + i, 11 + i, ok=i % 3 != 2)]
    assert recovery_time(flapping, 10.0, 20.0, RECOVERY) is None
    with pytest.raises(ValueError):
        recovery_time(recs, 10.0, 20.0, RECOVERY, healthy_s=0)


def test_recovery_never_reached_fails_not_measured() -> None:
    slo = load_slo(None, "spot_reclamation")
    recs = traffic(10, 25, ok=False)
    assert recovery_time(recs, 10.0, 25.0, slo) is None
    results = judge(slo.objectives, {"recovery_s": None, "availability": 1.0, "p99_ms": 1.0, "failover_s": 0.0,
                                     "schedule_lag_p99_ms": 3.0},
                    {"recovery_s": "errors never came back within objective"})
    [bad] = breached(results)
    assert bad.name == "recovery_s" and bad.detail == "not measured: errors never came back within objective"


def test_recovery_without_traffic_is_none() -> None:
    assert recovery_time([], 10.0, 20.0, RECOVERY) is None
    assert recovery_time(traffic(0, 10), 10.0, 20.0, RECOVERY) is None
    assert recovery_time(traffic(10, 20), 10.0, 10.0, RECOVERY) is None


def test_recovery_gap_without_requests_is_not_healthy() -> None:
    recs = traffic(10, 11) + traffic(13, 20)  # a hung service starts no requests at 11..13
    assert recovery_time(recs, 10.0, 20.0, RECOVERY) == 3.0


def test_recovery_too_slow_breaches_recovery_objective() -> None:
    recs = traffic(10, 35, ok=False) + traffic(35, 40)
    seconds = recovery_time(recs, 10.0, 40.0, RECOVERY)
    assert seconds == 25.0
    [r] = judge([obj("recovery_s", "<=", 20, "s")], {"recovery_s": seconds})
    assert not r.ok and r.detail == "observed 25 s"


def test_recovery_needs_a_criterion() -> None:
    with pytest.raises(ValueError):
        recovery_time(traffic(10, 20), 10.0, 20.0, [obj("failover_s", "<=", 10, "s")])


# --------------------------------------------------------------------------- freshness
FRESH = [obj("availability", ">=", 0.99, "fraction"), obj("freshness_s", "<=", 5, "s")]


def judged_fresh(recs: list[Rec]) -> dict[str, SloResult]:
    stats = window(recs, 0, 10)
    return by_name(judge(FRESH, observed_from_window(stats), reasons_from_window(stats)))


def aged(recs: list[Rec], age_of) -> list[Rec]:  # type: ignore[no-untyped-def]
    for r in recs:
        r.feature_age_s = age_of(r.start)
    return recs


def test_fresh_features_pass() -> None:
    results = judged_fresh(aged(traffic(0, 10), lambda t: 0.2 + (t % 1.0)))
    assert all(r.ok for r in results.values())
    assert results["freshness_s"].observed == pytest.approx(1.19, abs=0.011)


def test_stale_features_fail_freshness_while_availability_passes() -> None:
    # the pipeline stopped at t=3: every answer is a valid 200, the features grow old
    results = judged_fresh(aged(traffic(0, 10), lambda t: 0.5 if t < 3 else 0.5 + (t - 3)))
    assert results["availability"].ok and results["availability"].observed == 1.0
    assert not results["freshness_s"].ok
    assert results["freshness_s"].detail == "observed 7.49 s"


def test_failed_requests_do_not_count_for_freshness() -> None:
    recs = aged(traffic(0, 10), lambda t: 1.0)
    recs[5].ok, recs[5].feature_age_s = False, 99.0  # an error has no answer whose age matters
    assert judged_fresh(recs)["freshness_s"].observed == 1.0


def test_freshness_unreported_is_not_measured() -> None:
    results = judged_fresh(traffic(0, 10))  # a server that does not report feature age
    assert not results["freshness_s"].ok
    assert "not measured" in results["freshness_s"].detail and "feature age" in results["freshness_s"].detail


# --------------------------------------------------------------------------- failures cannot help
def test_a_fault_that_turns_slow_answers_into_fast_503s_does_not_improve_p99() -> None:
    """One replica in three is slow (900 ms); the fault makes it answer 1-ms 503s instead.
    Counting failures at their real latency, p99 would drop from 900 ms to 50 ms and the
    latency objective would look better. Counted as at least the client timeout, p99
    gets worse, and both objectives fail by name."""
    slow = [Rec(start=i / 100, latency_s=0.9 if i % 3 == 0 else 0.05) for i in range(1000)]
    fast_503 = [Rec(start=r.start, latency_s=0.001, ok=False, status=503, error="HTTP 503")
                if r.latency_s > 0.5 else r for r in slow]
    before, after = window(slow, 0, 10), window(fast_503, 0, 10)
    assert before.p99_ms == 900
    assert after.p99_ms is not None and after.p99_ms >= before.p99_ms, (before.p99_ms, after.p99_ms)
    judged_p99 = [obj("p99_ms", "<=", 1000), obj("availability", ">=", 0.99, "fraction")]
    results = by_name(judge(judged_p99, observed_from_window(after)))
    assert not results["p99_ms"].ok and not results["availability"].ok
    assert by_name(judge(judged_p99, observed_from_window(before)))["p99_ms"].ok


def test_a_relative_objective_is_judged_against_this_runs_baseline() -> None:
    from inferchaos.probes.slo import load_slo

    slo = load_slo(None, "x", ["p99_ms=baseline * 2 + 10"])
    p99 = slo.objective("p99_ms")
    assert p99 is not None
    base = window(traffic(0, 10, latency_s=0.05), 0, 10)
    resolved = p99.resolve(base.p99_ms)
    assert resolved.value == 110 and "baseline 50 * 2 + 10" in resolved.target()
    assert by_name(judge([resolved], observed_from_window(window(traffic(0, 10, latency_s=0.1), 0, 10))))["p99_ms"].ok
    slower = by_name(judge([resolved], observed_from_window(window(traffic(0, 10, latency_s=0.2), 0, 10))))["p99_ms"]
    assert not slower.ok and slower.objective.startswith("<= 110 ms")
