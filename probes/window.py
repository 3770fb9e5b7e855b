"""Statistics of the request log over time windows, as the client felt them.

A record belongs to the window its `start` falls in, on the run's monotonic clock, so
the phases (baseline, inject, hold, recovery) slice the log without overlap. Latency
percentiles count failed requests too: a timeout is latency the user felt. An empty
window measures nothing: its rates and percentiles are None, never 100%.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Protocol, Sequence


class Record(Protocol):
    """What the window needs of a request record (`load.records.RequestRecord` fits).
    Read-only properties, so frozen dataclasses match."""

    @property
    def start(self) -> float: ...
    @property
    def latency_s(self) -> float: ...
    @property
    def ok(self) -> bool: ...
    @property
    def status(self) -> int: ...
    @property
    def error(self) -> str | None: ...
    @property
    def ttft_s(self) -> float | None: ...
    @property
    def replica(self) -> str | None: ...
    @property
    def kind(self) -> str: ...
    @property
    def feature_age_s(self) -> float | None: ...


@dataclass(frozen=True)
class WindowStats:
    start: float
    end: float
    requests: int
    ok: int
    availability: float | None
    error_rate: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    #: valid answers per second of window.
    throughput_rps: float | None
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    #: worst age of the features behind a valid answer (None: no answer reported one).
    freshness_s: float | None
    #: failure reason -> count, failed requests only.
    errors: dict[str, int]
    #: replica -> requests it answered (any outcome).
    replicas: dict[str, int]

    @property
    def failed(self) -> int:
        return self.requests - self.ok


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile: always one of the measured values, never an interpolation
    between two (an SLO breach must point at a request that happened). None when empty."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    return _nearest_rank(sorted(values), q)


def _nearest_rank(ordered: Sequence[float], q: float) -> float | None:
    if not ordered:
        return None
    # Fraction(str(q)) keeps 99.9 exact, so rank = ceil(q/100 * n) is not off by one.
    rank = math.ceil(Fraction(str(q)) * len(ordered) / 100)
    return ordered[max(rank, 1) - 1]


def window(records: Iterable[Record], start: float, end: float) -> WindowStats:
    """Statistics of the records whose start lies in [start, end)."""
    if end < start:
        raise ValueError(f"window ends before it starts: [{start}, {end})")
    return _stats([r for r in records if start <= r.start < end], start, end)


def series(records: Iterable[Record], start: float, end: float, step_s: float = 1.0) -> list[WindowStats]:
    """Consecutive windows of `step_s` from `start` (the last one shorter if need be), for
    timelines, recovery and the safeguard. The log is sorted once, then sliced."""
    if step_s <= 0 or not math.isfinite(step_s):
        raise ValueError(f"step_s must be a positive number, got {step_s}")
    if end <= start:
        return []
    ordered = sorted((r for r in records if start <= r.start < end), key=lambda r: r.start)
    starts = [r.start for r in ordered]
    count = math.ceil((end - start) / step_s)
    bounds = [start + i * step_s for i in range(count)] + [end]
    if bounds[-2] >= end:  # float rounding made one window too many
        del bounds[-2]
    cuts = [bisect_left(starts, b) for b in bounds[:-1]] + [len(ordered)]
    return [_stats(ordered[cuts[i]:cuts[i + 1]], bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


def failure_reason(r: Record) -> str:
    """The bucket a failed request is counted under: its error, else what its status says."""
    if r.error:
        return r.error
    if r.status == 0:
        return "no response"
    if r.status != 200:
        return f"HTTP {r.status}"
    return "invalid answer"


def _stats(rs: Sequence[Record], start: float, end: float) -> WindowStats:
    n = len(rs)
    ok = sum(1 for r in rs if r.ok)
    latency = sorted(r.latency_s * 1000.0 for r in rs)
    ttft = sorted(r.ttft_s * 1000.0 for r in rs if r.ttft_s is not None)
    seconds = end - start
    return WindowStats(
        start=start,
        end=end,
        requests=n,
        ok=ok,
        availability=ok / n if n else None,
        error_rate=(n - ok) / n if n else None,
        p50_ms=_nearest_rank(latency, 50),
        p95_ms=_nearest_rank(latency, 95),
        p99_ms=_nearest_rank(latency, 99),
        max_ms=latency[-1] if latency else None,
        throughput_rps=ok / seconds if n and seconds > 0 else None,
        ttft_p50_ms=_nearest_rank(ttft, 50),
        ttft_p99_ms=_nearest_rank(ttft, 99),
        freshness_s=max((r.feature_age_s for r in rs if r.ok and r.feature_age_s is not None), default=None),
        errors=dict(Counter(failure_reason(r) for r in rs if not r.ok)),
        replicas=dict(Counter(r.replica for r in rs if r.replica is not None)),
    )
