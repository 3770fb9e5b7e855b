"""Statistics of the request log over time windows, as the client felt them.

A phase's window (`window`) holds every request that was out during it: started in it,
or started before and still unanswered when it began. A request in flight at the moment
of injection is a casualty of the fault, not of the baseline. Time series (`series`, for
timelines and recovery) slice by start instead, so each request counts once. `start` is
when the request was due (open loop: its scheduled send), so latency includes the wait a
late client imposed. In latency percentiles a failed request counts as at least the
client's timeout (`FAILED_AS_S`): to its user it was as bad as no answer, and a fault that
turns slow answers into 1-ms 503s must not improve the tail. With availability >= 99% the
failures stay above p99's rank; beyond it both objectives fail. `max_ms` is the slowest
request as measured. An empty window measures nothing: its rates and percentiles are
None, never 100%.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Protocol, Sequence

from inferchaos.probes.measure import FRACTION, Measure


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

#: how long a failed request counts in latency percentiles, at least: the load generator's
#: client timeout (INFERCHAOS_TIMEOUT_S in load/locustfile.py, 30 s by default).
FAILED_AS_S = 30.0

# Read with getattr and a default, so a record of an older log (or a test's own) still fits.
TOKEN_FIELDS = {"lag_s": 0.0, "tokens": None, "itl_ms": None, "incomplete": False}


def _f(r: Record, name: str):  # noqa: ANN202 - one of TOKEN_FIELDS
    return getattr(r, name, TOKEN_FIELDS[name])


#: The keys read straight off a window's statistics (judged over inject -> revert; the
#: steady state reads the same off the baseline). A new one is a WindowStats field and a line here.
WINDOW_MEASURES: tuple[Measure, ...] = (
    Measure("availability", ">=", "fraction", "fraction of requests (inject -> revert) that got a valid answer",
            FRACTION, relative=True, steady=True),
    Measure("error_rate", "<=", "fraction", "fraction of requests (inject -> revert) that did not", FRACTION,
            relative=True, steady=True),
    Measure("p50_ms", "<=", "ms", "median latency (inject -> revert); a failed request counts as at least the client "
            "timeout", relative=True, steady=True),
    Measure("p95_ms", "<=", "ms", "95th percentile latency (inject -> revert), failures as at least the client timeout",
            relative=True, steady=True),
    Measure("p99_ms", "<=", "ms", "99th percentile latency (inject -> revert), failures as at least the client timeout",
            relative=True, steady=True),
    Measure("ttft_p50_ms", "<=", "ms", "median time to first token of streaming requests, from the scheduled send "
            "(queueing included): what a typical user waits before the answer starts", relative=True, steady=True,
            missing="no streaming request got a first token in window {span}"),
    Measure("ttft_p99_ms", "<=", "ms", "99th percentile time to first token of streaming requests, from the "
            "scheduled send (queueing included)", relative=True, steady=True,
            missing="no streaming request got a first token in window {span}"),
    Measure("itl_p99_ms", "<=", "ms", "99th percentile inter-token latency: the gaps between successive tokens",
            relative=True, steady=True, missing="no stream got two tokens in window {span}"),
    Measure("tpot_p99_ms", "<=", "ms", "99th percentile of the streams' time per output token after the first",
            relative=True, steady=True, missing="no stream got two tokens in window {span}"),
    Measure("output_tokens_per_s", ">=", "tok/s", "streamed tokens received per second (inject -> revert)",
            relative=True, missing="no streaming request in window {span}"),
    Measure("incomplete_rate", "<=", "fraction", "streams cut before their end, or still out when the load "
            "stopped, of all streams (inject -> revert)", FRACTION, missing="no streaming request in window {span}"),
    Measure("throughput_rps", ">=", "req/s", "valid answers per second (inject -> revert)", relative=True, steady=True),
    Measure("freshness_s", "<=", "s", "worst age of the features a request was answered with",
            missing="no valid answer reported its feature age in window {span}"),
)
#: Keys of the load itself, computed from the request log over other spans.
LOAD_MEASURES: tuple[Measure, ...] = (
    Measure("goodput_rps", ">=", "req/s", "valid answers per second that also met every [goodput] constraint"),
    Measure("schedule_lag_p99_ms", "<=", "ms", "99th percentile of how late the load generator sent requests "
            "against its open-loop schedule (the whole run): above it the load was not what was asked", window="run"),
)


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
    #: gaps between successive tokens, every gap of every stream.
    itl_p99_ms: float | None
    #: per stream: mean gap after the first token; the 99th percentile of those.
    tpot_p99_ms: float | None
    #: tokens streamed per second of window (cut streams' tokens too: they were received).
    output_tokens_per_s: float | None
    #: streams that never finished, of all streams (None: no stream in window).
    incomplete_rate: float | None
    #: how late the client sent, against its schedule (0 under closed loop).
    schedule_lag_p99_ms: float | None
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
    """Statistics of the records out during [start, end): started in it, or started
    before `start` and not yet answered then."""
    if end < start:
        raise ValueError(f"window ends before it starts: [{start}, {end})")
    return _stats(overlapping(records, start, end), start, end)


def overlapping(records: Iterable[Record], start: float, end: float) -> list[Record]:
    return [r for r in records if r.start < end and (r.start >= start or r.start + r.latency_s > start)]


def goodput(records: Iterable[Record], start: float, end: float, constraints: Iterable[tuple[str, float]]) -> float | None:
    """Valid answers per second of [start, end) (by overlap, as `window`) that met every
    constraint: latency_ms, ttft_ms, itl_ms (the worst gap), tpot_ms. A constraint on
    tokens holds vacuously for a request that streams none (an infer)."""
    rs = overlapping(records, start, end)
    seconds = end - start
    if not rs or seconds <= 0:
        return None
    limits = dict(constraints)

    def good(r: Record) -> bool:
        if not r.ok:
            return False
        if "latency_ms" in limits and r.latency_s * 1000.0 > limits["latency_ms"]:
            return False
        if "ttft_ms" in limits and r.ttft_s is not None and r.ttft_s * 1000.0 > limits["ttft_ms"]:
            return False
        gaps = _f(r, "itl_ms") or ()
        if "itl_ms" in limits and gaps and max(gaps) > limits["itl_ms"]:
            return False
        return not ("tpot_ms" in limits and gaps and sum(gaps) / len(gaps) > limits["tpot_ms"])

    return sum(1 for r in rs if good(r)) / seconds


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
    # a failure counts as at least the client's timeout: a fast 503 must not lower the tail
    latency = sorted((r.latency_s if r.ok else max(r.latency_s, FAILED_AS_S)) * 1000.0 for r in rs)
    ttft = sorted(r.ttft_s * 1000.0 for r in rs if r.ttft_s is not None)
    gaps = [g for r in rs if (g := _f(r, "itl_ms"))]
    itl = sorted(x for g in gaps for x in g)
    tpot = sorted(sum(g) / len(g) for g in gaps)
    streams = [r for r in rs if _f(r, "tokens") is not None]
    lag = sorted(_f(r, "lag_s") * 1000.0 for r in rs)
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
        max_ms=max((r.latency_s * 1000.0 for r in rs), default=None),
        throughput_rps=ok / seconds if n and seconds > 0 else None,
        ttft_p50_ms=_nearest_rank(ttft, 50),
        ttft_p99_ms=_nearest_rank(ttft, 99),
        itl_p99_ms=_nearest_rank(itl, 99),
        tpot_p99_ms=_nearest_rank(tpot, 99),
        output_tokens_per_s=sum(_f(r, "tokens") for r in streams) / seconds if streams and seconds > 0 else None,
        incomplete_rate=sum(1 for r in streams if _f(r, "incomplete")) / len(streams) if streams else None,
        schedule_lag_p99_ms=_nearest_rank(lag, 99),
        freshness_s=max((r.feature_age_s for r in rs if r.ok and r.feature_age_s is not None), default=None),
        errors=dict(Counter(failure_reason(r) for r in rs if not r.ok)),
        replicas=dict(Counter(r.replica for r in rs if r.replica is not None)),
    )
