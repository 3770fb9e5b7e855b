"""GPU telemetry on Kubernetes: NVIDIA's dcgm-exporter, read through Prometheus.

The NVML probe (`probes.gpu`) samples the GPUs of the machine the runner runs on. On
Kubernetes the runner is a pod without a GPU, and the serving pods' GPUs are on other
nodes: the only honest source there is the DCGM exporter each GPU node runs, as scraped by
the cluster's Prometheus. This probe asks that Prometheus, over inject -> end, for the
same observations the NVML probe yields (`probes.gpu.GPU_KEYS`), so one SLO file judges
both targets.

What is read (units as dcgm-exporter's `etc/default-counters.csv` gives them):

- `DCGM_FI_DEV_FB_USED`, `DCGM_FI_DEV_FB_FREE` (MiB): memory; the fraction is
  used / (used + free) per GPU, the bytes used x 2**20.
- `DCGM_FI_DEV_GPU_UTIL` (%), `DCGM_FI_DEV_POWER_USAGE` (W), `DCGM_FI_DEV_GPU_TEMP` (C).
- `DCGM_FI_DEV_XID_ERRORS`: a gauge holding the *last* XID code a GPU reported (0 for
  none), not a count; an XID is a change of it to a non-zero code inside the window, per
  GPU (by UUID, whichever pod holds it). The same code twice in a row cannot be told from
  one: that is the exporter's own limit.

Series are scoped to the target's serving pods by dcgm-exporter's Kubernetes pod mapping:
`namespace`/`pod` labels, or `exported_namespace`/`exported_pod` where Prometheus scraped
without honor_labels (the exporter's own pod then owns `pod`). A Prometheus with no such
series (no exporter, no pod mapping, pods without `nvidia.com/gpu`) is "not measured",
never a healthy GPU.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Sequence

from inferchaos.probes.gpu import GPU_KEYS, GPU_MEASURES
from inferchaos.probes.measure import Measure
from inferchaos.probes.probe import BaseProbe, Measurement, RunView
from inferchaos.probes.prometheus import (NOT_MEASURED, PrometheusClient, PrometheusError, PromSlo, Series,
                                          observe_all)

FB_USED, FB_FREE = "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE"
GPU_UTIL, POWER, TEMP, XID = "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_GPU_TEMP", \
    "DCGM_FI_DEV_XID_ERRORS"
MIB = 1024 * 1024

#: The two spellings of dcgm-exporter's pod mapping: as exported, and as Prometheus renames
#: them when the scrape target's own labels win (honor_labels: false).
LABEL_FORMS: tuple[tuple[str, str], ...] = (("namespace", "pod"), ("exported_namespace", "exported_pod"))


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class PodScope:
    """The serving pods whose GPUs count. `namespace` None: pods of any namespace."""

    pods: tuple[str, ...]
    namespace: str | None = None

    def selectors(self) -> list[str]:
        """One label selector per label form; pod names matched exactly (RE2 anchors the
        regex, and names are escaped: `web.0` must not take `webx0`'s GPU)."""
        names = _quote("|".join(re.escape(p) for p in sorted(set(self.pods))))
        out = []
        for ns_label, pod_label in LABEL_FORMS:
            terms = ([f"{ns_label}={_quote(self.namespace)}"] if self.namespace else []) + [f"{pod_label}=~{names}"]
            out.append("{" + ",".join(terms) + "}")
        return out

    def describe(self) -> str:
        where = f" in namespace {self.namespace}" if self.namespace else ""
        return f"pods {', '.join(sorted(set(self.pods)))}{where}"


def _either(build: Callable[[str], str], scope: PodScope) -> str:
    """`build(selector)` for each label form, joined with `or`: only one form exists per scrape."""
    return " or ".join(f"({build(s)})" for s in scope.selectors())


@dataclass(frozen=True)
class DcgmQuery:
    key: str
    #: the DCGM fields it needs, named in the reason when they are missing.
    fields: tuple[str, ...]
    promql: str
    reduce: str


def gauge_queries(scope: PodScope) -> list[DcgmQuery]:
    """The PromQL of every observation but the XID count, scoped to `scope`."""
    return [
        DcgmQuery("gpu_memory_peak_frac", (FB_USED, FB_FREE),
                  _either(lambda s: f"{FB_USED}{s} / ({FB_USED}{s} + {FB_FREE}{s})", scope), "max"),
        DcgmQuery("gpu_memory_peak_bytes", (FB_USED,), _either(lambda s: f"{FB_USED}{s} * {MIB}", scope), "max"),
        DcgmQuery("gpu_utilization_mean_pct", (GPU_UTIL,), _either(lambda s: f"{GPU_UTIL}{s}", scope), "mean"),
        DcgmQuery("gpu_power_peak_w", (POWER,), _either(lambda s: f"{POWER}{s}", scope), "max"),
        DcgmQuery("gpu_temperature_peak_c", (TEMP,), _either(lambda s: f"{TEMP}{s}", scope), "max"),
    ]


def xid_changes(series: Sequence[Series], start: float) -> int:
    """XIDs raised at or after `start` (Unix s): changes of each GPU's last-XID gauge to a
    non-zero code. A GPU first seen inside the window with a code counts it (when it was
    raised is unknown, and an unknown XID must not pass)."""
    count = 0
    for s in series:
        prev: float | None = None
        for t, v in s.points:
            if math.isnan(v):
                continue
            if t >= start and v != 0 and v != prev:
                count += 1
            prev = v
    return count


def _step(start: float, end: float) -> float:
    """1 s, coarser for long windows: Prometheus refuses more than 11,000 points a series."""
    return max(1.0, math.ceil((end - start) / 5000))


@dataclass
class DcgmProbe(BaseProbe):
    """DCGM exporter metrics of the target's serving pods' GPUs, from Prometheus, judged
    inject -> end. Needs no target capability: what it needs is a Prometheus (`url`), and
    without one every key says so."""

    name: str = "dcgm"
    keys: tuple[str, ...] = GPU_KEYS
    measures: ClassVar[tuple[Measure, ...]] = GPU_MEASURES
    needs: frozenset[str] = frozenset()
    url: str | None = None
    #: the serving pods' names, asked once the run is over (replacements included).
    pods: Callable[[], Sequence[str]] = tuple
    namespace: str | None = None
    #: how long after the run Prometheus is given to hold a sample from the run's end on:
    #: dcgm-exporter collects every 30 s by default and Prometheus scrapes every 15-30 s, so
    #: the last seconds of a run reach it up to a minute later.
    settle_s: float = 75.0
    #: how far before inject a GPU's last XID code is looked up (so an old one is not new).
    xid_lookback_s: float = 120.0
    retry_for_s: float = 5.0
    figures: dict[str, float | None] = field(default_factory=dict)

    def observe(self, run: RunView) -> list[Measurement]:
        start, end = (run.wall(t) for t in run.span("after_inject"))
        values, why = self.read(start, end)
        self.figures = values
        return [Measurement(k, values.get(k), why.get(k)) for k in self.keys]

    def read(self, start: float, end: float) -> tuple[dict[str, float | None], dict[str, str]]:
        """Observations and reasons over [start, end] (Unix seconds), `end` carried on to the
        first scrape after it: the state at the run's end reaches Prometheus with that scrape."""
        values: dict[str, float | None] = {k: None for k in self.keys}
        if not self.url:
            return values, {k: ("no Prometheus to ask: the runner pod has no GPU for NVML; give --prometheus URL "
                                "of a Prometheus that scrapes NVIDIA's dcgm-exporter") for k in self.keys}
        scope = PodScope(tuple(self.pods()), self.namespace)
        if not scope.pods:
            return values, {k: "no serving pod to scope DCGM series by" for k in self.keys}
        queries = gauge_queries(scope)
        with PrometheusClient(self.url, retry_for_s=self.retry_for_s) as client:
            end = self._settle(client, scope, start, end)
            got, why = observe_all([PromSlo(q.key, q.promql, q.reduce, _step(start, end)) for q in queries],
                                   client, start, end)
            values.update(got)
            reasons = {q.key: self._no_data(why[q.key], q.fields, scope) for q in queries if q.key in why}
            values["gpu_xid_errors"], xid_why = self._xids(client, scope, start, end)
            if xid_why is not None:
                reasons["gpu_xid_errors"] = xid_why
        return values, reasons

    def _settle(self, client: PrometheusClient, scope: PodScope, start: float, end: float) -> float:
        """Wait until Prometheus holds a DCGM sample of the pods scraped at or after `end`,
        at most `settle_s`; at once where it holds none at all (no exporter: nothing will
        come). Returns where the queries end: one step past that sample, so the last
        evaluation sees it (else `end`). The exporter's own collection interval stays its
        resolution: a peak shorter than it can be missed, and is, by every DCGM reader."""
        newest = "max(" + _either(lambda s: f"timestamp({FB_USED}{s})", scope) + ")"
        deadline = time.monotonic() + self.settle_s
        while True:
            try:
                samples = client.query(newest).samples
            except PrometheusError:
                return end
            if samples and samples[0].value >= end:
                return samples[0].value + _step(start, end)
            if not samples or time.monotonic() >= deadline:
                return end
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))

    def _xids(self, client: PrometheusClient, scope: PodScope, start: float,
              end: float) -> tuple[float | None, str | None]:
        """Which GPUs the pods held (their UUIDs), then those GPUs' last-XID history, by
        UUID alone: a pod replaced onto the same GPU is not a new XID."""
        step = _step(start, end)
        try:
            held = client.query_range(_either(lambda s: f"{XID}{s}", scope), start, end, step)
            uuids = sorted({s.labels["UUID"] for s in held.series if s.labels.get("UUID")})
            if not uuids:
                return None, self._no_data("no data" if not held.measured else "no UUID label", (XID,), scope)
            history = client.query_range(
                f"max by (UUID) ({XID}{{UUID=~{_quote('|'.join(re.escape(u) for u in uuids))}}})",
                start - self.xid_lookback_s, end, step)
        except PrometheusError as exc:
            return None, str(exc)
        return float(xid_changes(history.series, start)), None

    def _no_data(self, why: str, fields: Sequence[str], scope: PodScope) -> str:
        if not why.startswith("no data") and why != "no UUID label":
            return why.removeprefix(NOT_MEASURED)
        return (f"no {' / '.join(fields)} series for {scope.describe()} in Prometheus at {self.url} "
                f"({why.split(' for query')[0]}): is NVIDIA's dcgm-exporter scraped there, with its "
                f"Kubernetes pod mapping on, and do the pods request nvidia.com/gpu?")
