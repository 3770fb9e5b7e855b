"""Window statistics on known data: nearest-rank exactness, empty windows, series slicing."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from inferchaos.probes.window import WindowStats, percentile, series, window


@dataclass(frozen=True)
class Rec:
    start: float
    latency_s: float
    ok: bool = True
    status: int = 200
    error: str | None = None
    ttft_s: float | None = None
    replica: str | None = "r1"
    kind: str = "infer"
    wall: float = 0.0
    feature_version: int | None = None
    feature_age_s: float | None = None
    worker: str = "w"


def test_percentile_nearest_rank_on_1_to_100() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # unsorted on purpose
    assert percentile(values, 99) == 99
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1
    assert percentile(values, 1) == 1
    assert percentile(values, 99.9) == 100


def test_percentile_never_interpolates() -> None:
    assert percentile([10.0, 20.0], 50) == 10
    assert percentile([10.0, 20.0], 51) == 20
    assert percentile([10.0, 20.0, 30.0, 40.0], 75) == 30
    assert percentile([7.0], 99) == 7
    # ceil(0.999 * 1000) = 999 exactly; float arithmetic would say 1000
    assert percentile([float(v) for v in range(1, 1001)], 99.9) == 999


def test_percentile_empty_and_bad_q() -> None:
    assert percentile([], 99) is None
    with pytest.raises(ValueError):
        percentile([1.0], 101)
    with pytest.raises(ValueError):
        percentile([1.0], -1)


def test_window_on_known_data() -> None:
    recs = [Rec(start=i * 0.01, latency_s=(i + 1) / 1000) for i in range(100)]  # 1..100 ms over 1 s
    s = window(recs, 0.0, 1.0)
    assert (s.requests, s.ok, s.availability, s.error_rate) == (100, 100, 1.0, 0.0)
    assert (s.p50_ms, s.p95_ms, s.p99_ms, s.max_ms) == pytest.approx((50, 95, 99, 100))
    assert s.throughput_rps == 100
    assert s.ttft_p99_ms is None and s.ttft_p50_ms is None
    assert s.errors == {} and s.replicas == {"r1": 100}


def test_window_holds_every_request_out_during_it() -> None:
    recs = [Rec(start=0.0, latency_s=0.1), Rec(start=0.999, latency_s=5.0), Rec(start=1.0, latency_s=0.1)]
    assert window(recs, 0.0, 1.0).requests == 2  # [start, end): the one due at 1.0 is not in it
    # the one sent at 0.999 was still waiting at 1.0: a casualty of whatever began then
    assert window(recs, 1.0, 2.0).requests == 2
    assert window(recs, 0.1, 0.5).requests == 0  # the first answered at 0.1 exactly: out no longer
    assert window(recs, 5.999, 7.0).requests == 0 and window(recs, 5.99, 7.0).requests == 1


def test_failed_requests_count_as_at_least_the_client_timeout() -> None:
    recs = [Rec(start=0.1 * i, latency_s=0.01) for i in range(8)] + [
        Rec(start=0.85, latency_s=30.0, ok=False, status=0, error="timeout", replica=None),
        Rec(start=0.9, latency_s=0.02, ok=False, status=503),
    ]
    s = window(recs, 0.0, 2.0)
    assert (s.requests, s.ok, s.failed) == (10, 8, 2)
    assert s.availability == 0.8 and s.error_rate == 0.2
    assert s.p99_ms == pytest.approx(30000) and s.max_ms == pytest.approx(30000)
    assert s.p50_ms == pytest.approx(10)
    assert s.throughput_rps == 4.0
    assert s.errors == {"timeout": 1, "HTTP 503": 1}
    assert s.replicas == {"r1": 9}


def test_failure_reasons_without_error_text() -> None:
    recs = [Rec(start=0.0, latency_s=0.1, ok=False, status=200),
            Rec(start=0.1, latency_s=0.1, ok=False, status=0)]
    assert window(recs, 0, 1).errors == {"invalid answer": 1, "no response": 1}


def test_ttft_from_streaming_records() -> None:
    recs = [Rec(start=0.01 * i, latency_s=0.5, kind="stream", ttft_s=(i + 1) / 1000) for i in range(100)]
    recs.append(Rec(start=0.5, latency_s=0.2))
    s = window(recs, 0.0, 1.0)
    assert s.ttft_p50_ms == pytest.approx(50) and s.ttft_p99_ms == pytest.approx(99)


def test_empty_window_measures_nothing() -> None:
    s = window([Rec(start=5.0, latency_s=0.1)], 0.0, 1.0)
    assert s.requests == 0 and s.ok == 0
    for name in ("availability", "error_rate", "p50_ms", "p95_ms", "p99_ms", "max_ms",
                 "throughput_rps", "ttft_p50_ms", "ttft_p99_ms"):
        assert getattr(s, name) is None, name
    assert s.errors == {} and s.replicas == {}


def test_window_rejects_backwards_bounds() -> None:
    with pytest.raises(ValueError):
        window([], 2.0, 1.0)


def test_series_slices_consecutive_windows() -> None:
    recs = [Rec(start=t, latency_s=0.01) for t in (0.0, 0.5, 1.2, 2.9, 3.1)]
    ws = series(reversed(recs), 0.0, 3.5)
    assert [(w.start, w.end) for w in ws] == [(0, 1), (1, 2), (2, 3), (3, 3.5)]
    assert [w.requests for w in ws] == [2, 1, 1, 1]
    assert ws[3].throughput_rps == 2.0  # one answer in a half-second window
    assert all(isinstance(w, WindowStats) for w in ws)


def test_series_agrees_with_window() -> None:
    recs = [Rec(start=0.037 * i, latency_s=0.001 * (i % 17), ok=i % 5 != 0) for i in range(300)]
    for w in series(recs, 0.1, 10.3, 0.7):  # a series slices by start; a window by overlap
        assert w == window([r for r in recs if w.start <= r.start < w.end], w.start, w.end)
    assert sum(w.requests for w in series(recs, 0.1, 10.3, 0.7)) == window(recs, 0.1, 10.3).requests


def test_series_edges() -> None:
    assert series([], 1.0, 1.0) == []
    assert [w.requests for w in series([], 0.0, 2.0)] == [0, 0]
    with pytest.raises(ValueError):
        series([], 0.0, 1.0, step_s=0)
    # float steps that do not divide exactly still cover [start, end) without a stray window
    ws = series([], 0.0, 0.3, step_s=0.1)
    assert len(ws) == 3 and ws[-1].end == 0.3


def test_works_with_the_real_request_record() -> None:
    records = pytest.importorskip("inferchaos.load.records")
    r = records.RequestRecord(start=1.0, wall=0.0, latency_s=0.25, kind="infer", status=200, ok=True,
                              replica="r2")
    s = window([r], 1.0, 2.0)
    assert (s.requests, s.p99_ms, s.replicas) == (1, 250, {"r2": 1})
