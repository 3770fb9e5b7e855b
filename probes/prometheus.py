"""PromQL over HTTP: instant and range queries, and SLO observations from them.

Real fleets judge themselves on Prometheus (queue depth, tail latency from histograms, GPU
memory from DCGM), so a chaos run should be able to read the same numbers the on-call
dashboards show. Three rules keep the answers honest:

- An empty result is "no data", which fails: a metric that vanished under a fault (its
  replica died, the scrape broke) is not a healthy zero.
- A Prometheus error (bad PromQL, a timeout in the engine) is one clear `PrometheusError`
  naming the query, its `errorType` and `error`, never a traceback from JSON parsing.
- Only what is worth repeating is retried: transport failures and 429/502/503/504, with
  jittered exponential backoff up to a deadline. Queries are GETs, so repeating is safe.

Times at this edge are Unix seconds (Prometheus' clock), not the run's monotonic clock.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import httpx
from tenacity import Retrying, retry_if_exception, stop_before_delay, wait_exponential_jitter

from inferchaos.ground.errors import TargetError

#: Statuses a busy or restarting Prometheus (or the proxy before it) answers with.
RETRY_STATUSES = frozenset({429, 502, 503, 504})

NOT_MEASURED = "not measured: "


class PrometheusError(TargetError):
    """Prometheus refused a query, or could not be reached before the retry deadline."""


class _Unavailable(Exception):
    """A retryable status; turned into a `PrometheusError` once retries are spent."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


@dataclass(frozen=True)
class Sample:
    """One value of an instant vector (or a scalar: empty labels). `t` in Unix seconds."""

    labels: Mapping[str, str]
    t: float
    value: float


@dataclass(frozen=True)
class Series:
    """One series of a range result: (Unix seconds, value) points, oldest first."""

    labels: Mapping[str, str]
    points: tuple[tuple[float, float], ...]

    @property
    def values(self) -> list[float]:
        return [v for _, v in self.points]


@dataclass(frozen=True)
class InstantResult:
    query: str
    result_type: str
    samples: tuple[Sample, ...]
    warnings: tuple[str, ...] = ()

    @property
    def measured(self) -> bool:
        return bool(self.samples)

    @property
    def reason(self) -> str:
        return "" if self.measured else f"{NOT_MEASURED}no data for query {self.query!r}"

    def values(self) -> list[float]:
        return [s.value for s in self.samples]


@dataclass(frozen=True)
class RangeResult:
    query: str
    start: float
    end: float
    step_s: float
    series: tuple[Series, ...]
    warnings: tuple[str, ...] = ()

    @property
    def measured(self) -> bool:
        return any(s.points for s in self.series)

    @property
    def reason(self) -> str:
        return "" if self.measured else (f"{NOT_MEASURED}no data for query {self.query!r} "
                                         f"over {self.end - self.start:.0f}s")

    def values(self) -> list[float]:
        return [v for s in self.series for v in s.values]


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, (httpx.TransportError, _Unavailable))


class PrometheusClient:
    """A small synchronous client of Prometheus' HTTP API (`/api/v1/query[_range]`)."""

    def __init__(self, base_url: str, timeout_s: float = 5.0, retry_for_s: float = 10.0,
                 backoff_s: float = 0.1, max_backoff_s: float = 2.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry_for_s = retry_for_s
        self._wait = wait_exponential_jitter(multiplier=backoff_s, max=max_backoff_s, jitter=backoff_s)
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s, transport=transport)

    def query(self, promql: str, at: float | None = None) -> InstantResult:
        """Evaluate `promql` at one instant (default: now, as Prometheus sees it)."""
        params: dict[str, str] = {"query": promql}
        if at is not None:
            params["time"] = _ts(at)
        data, warnings = self._get("/api/v1/query", params, promql)
        kind, result = data.get("resultType"), data.get("result")
        if kind == "vector":
            samples = tuple(Sample(dict(r["metric"]), float(r["value"][0]), float(r["value"][1])) for r in result)
        elif kind == "scalar":
            samples = (Sample({}, float(result[0]), float(result[1])),)
        else:
            raise PrometheusError(f"query {promql!r} gave a {kind} result; expected a vector or a scalar")
        return InstantResult(promql, kind, samples, warnings)

    def query_range(self, promql: str, start: float, end: float, step_s: float = 1.0) -> RangeResult:
        """Evaluate `promql` every `step_s` over [start, end] (Unix seconds)."""
        if end < start:
            raise ValueError(f"range ends before it starts: [{start}, {end}]")
        if step_s <= 0:
            raise ValueError(f"step_s must be positive, got {step_s}")
        params = {"query": promql, "start": _ts(start), "end": _ts(end), "step": f"{step_s:g}"}
        data, warnings = self._get("/api/v1/query_range", params, promql)
        if data.get("resultType") != "matrix":
            raise PrometheusError(f"range query {promql!r} gave a {data.get('resultType')} result, not a matrix")
        series = tuple(Series(dict(r["metric"]), tuple((float(t), float(v)) for t, v in r["values"]))
                       for r in data["result"])
        return RangeResult(promql, start, end, step_s, series, warnings)

    def _get(self, path: str, params: Mapping[str, str], promql: str) -> tuple[dict, tuple[str, ...]]:
        retrying = Retrying(retry=retry_if_exception(_retryable), wait=self._wait,
                            stop=stop_before_delay(self.retry_for_s), reraise=True)
        where = f"Prometheus at {self.base_url}"
        try:
            resp = retrying(self._get_once, path, params)
        except httpx.TransportError as exc:
            raise PrometheusError(f"{where} unreachable for query {promql!r} "
                                  f"(retried {self.retry_for_s:g}s): {type(exc).__name__}: {exc}") from None
        except _Unavailable as exc:
            raise PrometheusError(f"{where} answered HTTP {exc.response.status_code} to query {promql!r} "
                                  f"(retried {self.retry_for_s:g}s): {exc.response.text[:200]}") from None
        try:
            body = resp.json()
        except ValueError:
            raise PrometheusError(f"{where} answered HTTP {resp.status_code} with no JSON to query {promql!r}: "
                                  f"{resp.text[:200]}") from None
        if not isinstance(body, dict):
            raise PrometheusError(f"{where} answered {type(body).__name__} JSON to query {promql!r}")
        if body.get("status") == "error":
            raise PrometheusError(f"Prometheus rejected query {promql!r}: "
                                  f"{body.get('errorType', 'error')}: {body.get('error', 'no detail')}")
        if resp.status_code != 200 or body.get("status") != "success" or not isinstance(body.get("data"), dict):
            raise PrometheusError(f"{where} answered HTTP {resp.status_code} to query {promql!r}: {resp.text[:200]}")
        return body["data"], tuple(body.get("warnings") or ())

    def _get_once(self, path: str, params: Mapping[str, str]) -> httpx.Response:
        resp = self._http.get(path, params=params)
        if resp.status_code in RETRY_STATUSES:
            raise _Unavailable(resp)
        return resp

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PrometheusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ts(t: float) -> str:
    return f"{t:.3f}"


#: How many values (series × points) become one observation.
REDUCERS = ("max", "min", "mean", "last")


@dataclass(frozen=True)
class PromSlo:
    """An SLO observation read from Prometheus, e.g.
    `PromSlo("queue_depth_max", "sum(vllm:num_requests_waiting)")`.

    NaN points (a quantile of a histogram that saw no requests in its rate window) are
    left out; a query with only NaN, or with nothing, is not measured."""

    key: str
    query: str
    reduce: str = "max"
    step_s: float = 1.0

    def __post_init__(self) -> None:
        if self.reduce not in REDUCERS:
            raise ValueError(f"{self.key}: reduce must be one of {', '.join(REDUCERS)}, got {self.reduce!r}")

    def observe(self, client: PrometheusClient, start: float | None = None,
                end: float | None = None) -> tuple[float | None, str | None]:
        """(value, None), or (None, why) when there is no data. Without `start`, an instant
        query at `end` (default now); with it, a range query over [start, end or now].
        Raises `PrometheusError` when Prometheus refuses or cannot be reached."""
        if start is None:
            result: InstantResult | RangeResult = client.query(self.query, end)
            values = result.values()
        else:
            result = client.query_range(self.query, start, time.time() if end is None else end, self.step_s)
            values = result.values()
        if not result.measured:
            return None, result.reason.removeprefix(NOT_MEASURED)
        finite = [v for v in values if not math.isnan(v)]
        if not finite:
            return None, f"query {self.query!r} gave only NaN ({len(values)} values)"
        return _reduce(self.reduce, finite), None


def _reduce(how: str, values: Sequence[float]) -> float:
    if how == "max":
        return max(values)
    if how == "min":
        return min(values)
    if how == "mean":
        return sum(values) / len(values)
    return values[-1]


def observe_all(slos: Iterable[PromSlo], client: PrometheusClient, start: float | None = None,
                end: float | None = None) -> tuple[dict[str, float | None], dict[str, str]]:
    """Observations and reasons for `probes.verdict.judge`. A Prometheus error fails its
    own objective (with the error as reason) instead of the whole evaluation."""
    observed: dict[str, float | None] = {}
    reasons: dict[str, str] = {}
    for slo in slos:
        try:
            value, why = slo.observe(client, start, end)
        except PrometheusError as exc:
            value, why = None, str(exc)
        observed[slo.key] = value
        if why is not None:
            reasons[slo.key] = why
    return observed, reasons
