"""What the clients saw, window by window: the request log's statistics (availability,
latency percentiles, time to first token, freshness, ...) judged over the fault window, with
the baseline's and the recovery's kept beside them for the report and for relative bounds."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import ClassVar, Sequence

from inferchaos.probes.measure import Measure
from inferchaos.probes.probe import BaseProbe, Measurement, RunView
from inferchaos.probes.verdict import observed_from_window, reasons_from_window
from inferchaos.probes.window import WINDOW_MEASURES, Record, WindowStats, series, window


@dataclass(frozen=True)
class Windows:
    """The request log cut at the phases: before, during and after the fault."""

    baseline: WindowStats
    during: WindowStats
    recovery: WindowStats


@dataclass(frozen=True)
class Bucket:
    """One step of the run as the clients saw it; `t` in seconds from the run's start."""

    t: float
    requests: int
    rps: float
    errors_per_s: float
    p50_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True)
class Series:
    """The whole run, step by step: what the timeline draws. `end_s`: the last phase's end
    or the last answer, whichever is later."""

    end_s: float
    step_s: float = 1.0
    buckets: tuple[Bucket, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        """As summary.json holds it (the reports draw from that alone)."""
        return {"end_s": self.end_s, "step_s": self.step_s, "buckets": [asdict(b) for b in self.buckets]}


def run_series(records: Sequence[Record], t0: float, phase_ends: Sequence[float], step_s: float = 1.0) -> Series:
    """The request log cut into steps from the run's start (every run has one, judged or not:
    an inconclusive run's timeline shows why)."""
    last = [r.start + r.latency_s for r in records[-1:]]
    end = max([e - t0 for e in phase_ends] + [t - t0 for t in last] + [0.0])
    buckets = []
    for w in series(records, t0, t0 + end, step_s):
        span = w.end - w.start
        buckets.append(Bucket(round(w.start - t0, 3), w.requests, w.requests / span, w.failed / span,
                              w.p50_ms, w.p99_ms))
    return Series(round(end, 3), step_s, tuple(buckets))


def windows(run: RunView) -> Windows:
    return Windows(window(run.records, *run.span("baseline")), window(run.records, *run.span("fault")),
                   window(run.records, *run.span("recovery")))


@dataclass
class RequestProbe(BaseProbe):
    name: str = "requests"
    keys: tuple[str, ...] = tuple(m.name for m in WINDOW_MEASURES)
    measures: ClassVar[tuple[Measure, ...]] = WINDOW_MEASURES
    report_: Windows | None = None

    def observe(self, run: RunView) -> list[Measurement]:
        """Each key over the window its Measure declares (all of them today: the fault's)."""
        self.report_ = windows(run)
        out = []
        for m in self.measures:
            stats = self.report_.during if m.window == "fault" else window(run.records, *run.span(m.window))
            out.append(Measurement(m.name, observed_from_window(stats)[m.name], reasons_from_window(stats).get(m.name)))
        return out

    def report(self) -> Windows | None:
        return self.report_
