"""Server-side queue time over a window, from the replicas' own histograms.

Client latency says the tail got worse; the servers' `vllm:request_queue_time_seconds`
says where the time went (waiting for a batch, not computing). Each replica is scraped at
the window's start and end and the bucket counts are differenced, then merged across
replicas and read the way PromQL's `histogram_quantile` reads them (linear inside a
bucket), so the figure matches what a dashboard over the same metric would show.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Mapping

import httpx
from prometheus_client.parser import text_string_to_metric_families

from inferchaos.probes.measure import Measure
from inferchaos.probes.probe import BaseProbe, Measurement, RunView
from inferchaos.targets.capabilities import METRICS

METRIC = "vllm:request_queue_time_seconds"


@dataclass(frozen=True)
class Histogram:
    #: upper bound -> cumulative count (the `le` buckets, +Inf included).
    buckets: dict[float, float] = field(default_factory=dict)
    sum: float = 0.0
    count: float = 0.0

    def minus(self, earlier: Histogram) -> Histogram:
        return Histogram({le: c - earlier.buckets.get(le, 0.0) for le, c in self.buckets.items()},
                         self.sum - earlier.sum, self.count - earlier.count)

    def plus(self, other: Histogram) -> Histogram:
        keys = set(self.buckets) | set(other.buckets)
        return Histogram({le: self.buckets.get(le, 0.0) + other.buckets.get(le, 0.0) for le in keys},
                         self.sum + other.sum, self.count + other.count)

    def quantile(self, q: float) -> float | None:
        """histogram_quantile(q): None without observations; the highest finite bound when
        the rank falls in the +Inf bucket (Prometheus does the same)."""
        if self.count <= 0:
            return None
        edges = sorted(self.buckets)
        rank = q * self.count
        lower, below = 0.0, 0.0
        for le in edges:
            cum = self.buckets[le]
            if cum >= rank:
                if math.isinf(le):
                    return lower
                inside = cum - below
                return lower + (le - lower) * ((rank - below) / inside if inside > 0 else 1.0)
            lower, below = le, cum
        return lower

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count > 0 else None


def parse(text: str, metric: str = METRIC) -> Histogram | None:
    """The histogram `metric` in Prometheus text, summed over its label sets."""
    total: Histogram | None = None
    for family in text_string_to_metric_families(text):
        if family.name != metric:
            continue
        buckets: dict[float, float] = {}
        s = c = 0.0
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
            elif sample.name.endswith("_sum"):
                s += sample.value
            elif sample.name.endswith("_count"):
                c += sample.value
        h = Histogram(buckets, s, c)
        total = h if total is None else total.plus(h)
    return total


def scrape(urls: Mapping[str, str], timeout_s: float = 2.0) -> dict[str, Histogram]:
    """replica -> its queue-time histogram now; replicas that do not answer are left out."""
    out: dict[str, Histogram] = {}
    with httpx.Client(timeout=timeout_s) as client:
        for name, url in urls.items():
            try:
                h = parse(client.get(url).text)
            except (httpx.HTTPError, ValueError):
                continue
            if h is not None:
                out[name] = h
    return out


@dataclass(frozen=True)
class QueueTime:
    requests: int
    p99_ms: float | None
    mean_ms: float | None
    replicas: int

    def to_dict(self) -> dict:
        return {"requests": self.requests, "p99_ms": self.p99_ms, "mean_ms": self.mean_ms, "replicas": self.replicas}


def over_window(before: Mapping[str, Histogram], after: Mapping[str, Histogram]) -> QueueTime | None:
    """Queue time of the requests the replicas finished between the two scrapes. Replicas
    seen at only one of them (died, or started in between) count from zero or not at all:
    a replica new at the end counts whole, one gone by the end is lost with its counters."""
    merged: Histogram | None = None
    for name, h in after.items():
        d = h.minus(before[name]) if name in before else h
        merged = d if merged is None else merged.plus(d)
    if merged is None or merged.count <= 0:
        return None
    q, mean = merged.quantile(0.99), merged.mean
    return QueueTime(int(merged.count), None if q is None else round(q * 1000, 3),
                     None if mean is None else round(mean * 1000, 3), len(after))


# ---------------------------------------------------------------------- as a probe
@dataclass
class QueueTimeProbe(BaseProbe):
    """The servers' own queue time between the inject and the revert, from two scrapes of
    every replica's /metrics."""

    name: str = "queue_time"
    keys: tuple[str, ...] = ("queue_p99_ms",)
    measures: ClassVar[tuple[Measure, ...]] = (
        Measure("queue_p99_ms", "<=", "ms", "99th percentile of the servers' own queue time (inject -> revert)"),
    )
    needs: frozenset[str] = frozenset({METRICS})
    urls: Callable[[], Mapping[str, str]] = dict
    result: QueueTime | None = None

    def mark(self, phase: str) -> None:
        if phase == "inject":
            self._before = scrape(self.urls())
        elif phase == "revert" and hasattr(self, "_before"):
            self.result = over_window(self._before, scrape(self.urls()))

    def report(self) -> QueueTime | None:
        return self.result

    def observe(self, run: RunView) -> list[Measurement]:
        if self.result is None:
            return [Measurement("queue_p99_ms", None, f"no replica reported {METRIC} over the fault window")]
        return [Measurement("queue_p99_ms", self.result.p99_ms)]
