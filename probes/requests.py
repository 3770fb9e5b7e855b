"""What the clients saw, window by window: the request log's statistics (availability,
latency percentiles, time to first token, freshness, ...) judged over the fault window, with
the baseline's and the recovery's kept beside them for the report and for relative bounds."""

from __future__ import annotations

from dataclasses import dataclass, field
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
class Series:
    """The whole run, step by step, as the clients saw it: what the timeline draws. `t0`: the
    run's start on the monotonic clock; `end_s`: the last phase's end or the last answer,
    whichever is later, in seconds from it."""

    t0: float
    end_s: float
    step_s: float = 1.0
    steps: tuple[WindowStats, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        """As summary.json holds it (the reports draw from that alone): per step its start
        (seconds from the run's start), requests, req/s, errors/s, p50 and p99."""
        buckets = [{"t": round(w.start - self.t0, 3), "requests": w.requests, "rps": w.requests / (w.end - w.start),
                    "errors_per_s": w.failed / (w.end - w.start), "p50_ms": w.p50_ms, "p99_ms": w.p99_ms}
                   for w in self.steps]
        return {"end_s": self.end_s, "step_s": self.step_s, "buckets": buckets}


def run_series(records: Sequence[Record], t0: float, phase_ends: Sequence[float], step_s: float = 1.0) -> Series:
    """The request log cut into steps from the run's start (every run has one, judged or not:
    an inconclusive run's timeline shows why)."""
    last = [r.start + r.latency_s for r in records[-1:]]
    end = max([e - t0 for e in phase_ends] + [t - t0 for t in last] + [0.0])
    return Series(t0, round(end, 3), step_s, tuple(series(records, t0, t0 + end, step_s)))


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
