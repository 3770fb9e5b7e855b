"""The safeguard both ways: a healthy window never trips it, a hard breach does, by name."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from inferchaos.probes.safeguard import Safeguard

NOW = 1000.0


@dataclass(frozen=True)
class Rec:
    start: float
    latency_s: float = 0.05
    ok: bool = True


def traffic(t0: float, t1: float, rate: float = 20, latency_s: float = 0.05, ok: bool = True) -> list[Rec]:
    n = round((t1 - t0) * rate)
    return [Rec(t0 + i / rate, latency_s, ok) for i in range(n)]


def guard(**kw: float) -> Safeguard:
    return Safeguard(**{"max_error_rate": 0.5, "window_s": 3.0, **kw})  # type: ignore[arg-type]


def test_a_healthy_window_does_not_trip():
    g = guard(max_p99_ms=1000)
    g.feed(traffic(NOW - 3, NOW))
    # a few failures and one slow request are within the hard limits
    g.feed([Rec(NOW - 1, ok=False), Rec(NOW - 0.5, ok=False), Rec(NOW - 0.2, latency_s=0.9)])
    assert g.check(NOW) is None
    assert g.tripped is None


def test_error_rate_above_the_limit_trips_naming_the_limit():
    g = guard(max_error_rate=0.25)
    g.feed(traffic(NOW - 3, NOW, ok=True))  # 60 ok
    g.feed(traffic(NOW - 3, NOW, rate=10, ok=False))  # 30 failed: 33%
    breach = g.check(NOW)
    assert breach is not None
    assert "error rate 33%" in breach and "hard limit 25%" in breach and "3s" in breach
    assert g.tripped == breach


def test_error_rate_at_the_limit_does_not_trip():
    g = guard(max_error_rate=0.5)
    g.feed(traffic(NOW - 2, NOW, rate=10, ok=True) + traffic(NOW - 2, NOW, rate=10, ok=False))
    assert g.check(NOW) is None
    g.feed([Rec(NOW - 0.01, ok=False)])  # one more failure tips it over
    assert g.check(NOW) is not None


def test_p99_above_the_limit_trips_naming_the_limit():
    g = guard(max_p99_ms=500)
    g.feed(traffic(NOW - 3, NOW, latency_s=0.05))  # 60 fast
    g.feed(traffic(NOW - 3, NOW, rate=1, latency_s=2.0))  # 3 slow of 63: above the 99th percentile
    breach = g.check(NOW)
    assert breach is not None
    assert "p99 2000 ms" in breach and "hard limit 500 ms" in breach
    assert g.tripped == breach


def test_p99_is_not_checked_without_a_limit():
    g = guard()
    g.feed(traffic(NOW - 3, NOW, latency_s=30.0))
    assert g.check(NOW) is None and g.tripped is None


def test_p99_at_the_limit_does_not_trip():
    g = guard(max_p99_ms=500)
    g.feed(traffic(NOW - 3, NOW, latency_s=0.5))
    assert g.check(NOW) is None


def test_fewer_than_min_requests_never_trips():
    g = guard(max_p99_ms=1)
    g.feed([Rec(NOW - 1 + i * 0.1, latency_s=5.0, ok=False) for i in range(9)])
    assert g.check(NOW) is None and g.tripped is None
    g.feed([Rec(NOW - 0.05, latency_s=5.0, ok=False)])  # the tenth
    assert g.check(NOW) is not None

    strict = Safeguard(0.5, 3.0, min_requests=50)
    strict.feed(traffic(NOW - 2, NOW, ok=False))  # 40 failures
    assert strict.check(NOW) is None


def test_old_records_fall_out_of_the_window():
    g = guard(max_p99_ms=500)
    g.feed(traffic(NOW - 10, NOW - 3.5, latency_s=9.0, ok=False))  # an outage, over before the window
    g.feed(traffic(NOW - 3, NOW))  # healthy now
    assert g.check(NOW) is None and g.tripped is None
    assert all(r.ok for r in g.recent(NOW))
    assert len(g.recent(NOW)) == 60

    # the same outage, judged while it was happening, does trip
    h = guard(max_p99_ms=500)
    h.feed(traffic(NOW - 10, NOW - 3.5, latency_s=9.0, ok=False))
    assert h.check(NOW - 4) is not None


def test_a_breach_expires_when_time_moves_on():
    g = guard()
    g.feed(traffic(NOW - 3, NOW, ok=False))
    assert g.check(NOW) is not None
    assert g.check(NOW + 10) is None  # nothing in the last 3 s any more
    assert g.recent(NOW + 100) == []  # and the memory is let go


def test_tripped_keeps_the_first_breach():
    g = guard(max_error_rate=0.2, max_p99_ms=500)
    g.feed(traffic(NOW - 3, NOW, ok=False))
    first = g.check(NOW)
    assert first is not None and "error rate" in first

    # later: errors gone, latency now breaches; check() reports the new breach...
    g.feed(traffic(NOW + 10, NOW + 13, latency_s=3.0))
    second = g.check(NOW + 13)
    assert second is not None and "p99" in second
    # ...but `tripped` still names the first, which is what aborted the run
    assert g.tripped == first

    # and a healthy window afterwards does not clear it
    g.feed(traffic(NOW + 20, NOW + 23))
    assert g.check(NOW + 23) is None
    assert g.tripped == first


@pytest.mark.parametrize("ok, latency_s", [(True, 0.01), (False, 0.01), (True, 60.0)])
def test_feed_alone_never_trips(ok, latency_s):
    """Only check() judges: the engine feeds during the baseline without arming the safeguard."""
    g = guard(max_error_rate=0.1, max_p99_ms=100)
    g.feed(traffic(NOW - 3, NOW, ok=ok, latency_s=latency_s))
    assert g.tripped is None


# ----------------------------------------------------------------------------- requests still out
def test_a_hang_trips_p99_through_the_requests_still_out():
    """A hung replica's requests leave no record until they end: only their age shows it."""
    g = guard(max_p99_ms=1000)
    g.feed(traffic(NOW - 3, NOW))  # the other replicas keep answering fast
    hung = [NOW - 3 + i * 0.1 for i in range(20)]  # a third of the arrivals, out for up to 3 s
    g.feed([], in_flight=hung)
    breach = g.check(NOW)
    assert breach is not None and "p99" in breach and "hard limit 1000 ms" in breach
    assert "requests still out longer than that" in breach


def test_requests_out_briefly_do_not_trip():
    g = guard(max_p99_ms=1000)
    g.feed(traffic(NOW - 3, NOW), in_flight=[NOW - 0.05 * i for i in range(10)])  # out < 0.5 s
    assert g.check(NOW) is None


def test_no_answer_for_a_window_with_requests_out_trips_without_any_limit():
    g = guard()  # no max_p99_ms
    g.feed(traffic(NOW - 8, NOW - 4))  # answered until 4 s ago, then nothing
    g.feed([], in_flight=[NOW - 4 + i * 0.01 for i in range(400)])
    breach = g.check(NOW)
    assert breach is not None and "no answer in the last 3s" in breach and "400 requests are out" in breach
    # the same, while answers still come: no trip
    h = guard()
    h.feed(traffic(NOW - 8, NOW), in_flight=[NOW - 4])
    assert h.check(NOW) is None


def test_in_flight_is_replaced_not_accumulated():
    g = guard(max_p99_ms=1000)
    g.feed(traffic(NOW - 3, NOW), in_flight=[NOW - 2.5] * 5)
    assert g.check(NOW) is not None
    h = guard(max_p99_ms=1000)
    h.feed(traffic(NOW - 3, NOW), in_flight=[NOW - 2.5] * 5)
    h.feed([], in_flight=[])  # they were answered since
    assert h.check(NOW) is None
