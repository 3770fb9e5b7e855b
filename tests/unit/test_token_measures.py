"""Token-level measures, goodput, schedule lag and stream integrity: each SLO passes on a
healthy log and fails, by name, on a planted breach. The records are what the locustfile
writes (load.records.RequestRecord), built here so each number is known."""

from __future__ import annotations

import pytest

from inferchaos.load.records import RequestRecord
from inferchaos.probes.integrity import integrity
from inferchaos.probes.slo import Objective
from inferchaos.probes.verdict import breached, judge, observed_from_window, reasons_from_window
from inferchaos.probes.window import goodput, window


def stream(start: float, gaps_ms=(10.0,) * 7, ttft_ms: float = 30.0, ok: bool = True, prompt: int = 0,
           sha: str | None = "aaaa", lag_ms: float = 1.0, incomplete: bool = False) -> RequestRecord:
    latency = (ttft_ms + sum(gaps_ms)) / 1000 + 0.002
    return RequestRecord(start=start, wall=start, latency_s=latency, kind="stream", status=200, ok=ok,
                         error=None if ok else "no [DONE]", ttft_s=ttft_ms / 1000, tokens=len(gaps_ms) + 1,
                         itl_ms=tuple(gaps_ms), incomplete=incomplete, prompt=prompt,
                         text_sha=sha if ok else None, lag_s=lag_ms / 1000)


def steady(n: int = 200, t0: float = 0.0, **kw) -> list[RequestRecord]:
    return [stream(t0 + i * 0.05, prompt=i % 3, sha=f"text-{i % 3}", **kw) for i in range(n)]


OBJ = {k: Objective(k, op, v, unit) for k, op, v, unit in [
    ("ttft_p50_ms", "<=", 50, "ms"), ("itl_p99_ms", "<=", 50, "ms"), ("tpot_p99_ms", "<=", 30, "ms"), ("output_tokens_per_s", ">=", 100, "tok/s"),
    ("incomplete_rate", "<=", 0.05, "fraction"), ("goodput_rps", ">=", 15, "req/s"),
    ("schedule_lag_p99_ms", "<=", 100, "ms"), ("stream_integrity", ">=", 1.0, "fraction")]}


def verdict_on(records, key: str, **extra) -> list[str]:
    stats = window(records, 0.0, 10.0)
    observed = {**observed_from_window(stats), "schedule_lag_p99_ms": stats.schedule_lag_p99_ms, **extra}
    return [r.name for r in breached(judge([OBJ[key]], observed, reasons_from_window(stats)))]


def test_healthy_streams_measure_what_was_planted():
    s = window(steady(), 0.0, 10.0)
    assert s.itl_p99_ms == 10.0 and s.tpot_p99_ms == 10.0
    assert s.output_tokens_per_s == pytest.approx(200 * 8 / 10.0)
    assert s.incomplete_rate == 0.0 and s.schedule_lag_p99_ms == pytest.approx(1.0)
    for key in ("itl_p99_ms", "tpot_p99_ms", "output_tokens_per_s", "incomplete_rate", "schedule_lag_p99_ms"):
        assert verdict_on(steady(), key) == [], key


def test_ttft_p50_passes_a_healthy_median_and_fails_when_most_users_wait():
    assert window(steady(), 0.0, 10.0).ttft_p50_ms == 30.0
    assert verdict_on(steady(), "ttft_p50_ms") == []
    # slow starts move p99 long before the median: half of them still leave the nearest-rank
    # median at 30 ms; three in five move it
    half = [stream(r.start, ttft_ms=400.0) if i % 2 == 0 else r for i, r in enumerate(steady())]
    assert verdict_on(half, "ttft_p50_ms") == []
    most = [stream(r.start, ttft_ms=400.0) if i % 5 < 3 else r for i, r in enumerate(steady())]
    assert verdict_on(most, "ttft_p50_ms") == ["ttft_p50_ms"]


def test_a_stalling_token_breaches_itl_but_not_tpot():
    records = steady()
    # 1 stream in 40 stalls 400 ms between two tokens: 7 of 1400 gaps (0.5%) stay under p99,
    # so make it 1 in 10: the gap p99 is the stall; each stream's mean gap is only 66 ms
    records = [stream(r.start, gaps_ms=(10.0,) * 6 + (400.0,), prompt=r.prompt, sha=r.text_sha)
               if i % 10 == 0 else r for i, r in enumerate(records)]
    assert verdict_on(records, "itl_p99_ms") == ["itl_p99_ms"]
    assert window(records, 0, 10).tpot_p99_ms == pytest.approx(sum((10.0,) * 6 + (400.0,)) / 7)
    assert verdict_on(records, "tpot_p99_ms") == ["tpot_p99_ms"]


def test_slow_tokens_throughout_breach_tpot_and_tokens_per_s():
    slow = [stream(i * 0.5, gaps_ms=(40.0,) * 7) for i in range(20)]
    assert verdict_on(slow, "tpot_p99_ms") == ["tpot_p99_ms"]
    assert verdict_on(slow, "output_tokens_per_s") == ["output_tokens_per_s"]  # 16 tok/s < 100


def test_cut_streams_breach_incomplete_rate():
    records = steady()
    records = [stream(r.start, gaps_ms=(10.0,), ok=False, incomplete=True) if i % 10 == 0 else r
               for i, r in enumerate(records)]
    assert window(records, 0, 10).incomplete_rate == pytest.approx(0.1)
    assert verdict_on(records, "incomplete_rate") == ["incomplete_rate"]


def test_no_stream_leaves_token_measures_not_measured_with_the_reason():
    unary = [RequestRecord(start=i * 0.1, wall=0, latency_s=0.01, kind="infer", status=200, ok=True)
             for i in range(50)]
    stats = window(unary, 0, 10)
    results = judge([OBJ["itl_p99_ms"], OBJ["incomplete_rate"], OBJ["ttft_p50_ms"]], observed_from_window(stats),
                    reasons_from_window(stats))
    assert [r.ok for r in results] == [False, False, False]
    assert "no streaming request got a first token" in results[2].detail
    assert "no stream got two tokens" in results[0].detail and "no streaming request" in results[1].detail


def test_a_client_behind_its_schedule_is_not_a_pass():
    late = steady(lag_ms=250.0)
    assert verdict_on(late, "schedule_lag_p99_ms") == ["schedule_lag_p99_ms"]


def test_goodput_counts_only_answers_within_every_constraint():
    records = steady()  # 20 req/s, ttft 30 ms, gaps 10 ms
    limits = (("ttft_ms", 100.0), ("itl_ms", 50.0), ("latency_ms", 1000.0))
    assert goodput(records, 0, 10, limits) == pytest.approx(20.0)
    assert verdict_on(records, "goodput_rps", goodput_rps=goodput(records, 0, 10, limits)) == []
    # a third of them get their first token late: valid answers still, but not goodput
    records = [stream(r.start, ttft_ms=300.0) if i % 3 == 0 else r for i, r in enumerate(records)]
    assert goodput(records, 0, 10, limits) == pytest.approx(200 * 2 / 3 / 10, abs=0.1)
    assert verdict_on(records, "goodput_rps", goodput_rps=goodput(records, 0, 10, limits)) == ["goodput_rps"]
    # and a failed request is never goodput, however fast
    assert goodput([stream(0.0, ok=False)], 0, 10, limits) == 0.0


def test_integrity_holds_when_every_answer_repeats_the_baseline():
    records = steady(n=100) + steady(n=100, t0=5.0)
    checked = integrity(records, (0.0, 5.0), (5.0, 10.0))
    assert checked.judged > 90 and checked.rate == 1.0


def test_lost_or_doubled_tokens_break_integrity_by_name():
    after = [stream(5.0 + i * 0.05, prompt=i % 3, sha="text-garbled" if i == 7 else f"text-{i % 3}")
             for i in range(100)]
    checked = integrity(steady(n=100) + after, (0.0, 5.0), (5.0, 10.0))
    assert checked.rate == pytest.approx(1 - 1 / checked.judged)
    [bad] = breached(judge([OBJ["stream_integrity"]], {"stream_integrity": checked.rate}))
    assert bad.name == "stream_integrity"


def test_a_server_that_is_not_deterministic_leaves_integrity_unmeasured():
    noisy = [stream(i * 0.05, prompt=0, sha=f"sample-{i}") for i in range(100)]
    checked = integrity(noisy, (0.0, 5.0), (5.0, 10.0))
    assert checked.rate is None and checked.unstable_prompts == 1 and "not deterministic" in checked.reason


def test_a_request_in_flight_at_injection_is_judged_with_the_fault():
    sent_before = RequestRecord(start=4.9, wall=0, latency_s=3.0, kind="infer", status=0, ok=False, error="x")
    assert window([sent_before], 5.0, 10.0).requests == 1
    assert window([sent_before], 5.0, 10.0).availability == 0.0
