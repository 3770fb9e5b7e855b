"""What the clients saw, window by window: the request log's statistics (availability,
latency percentiles, time to first token, freshness, ...) judged over the fault window, with
the baseline's and the recovery's kept beside them for the report and for relative bounds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from inferchaos.probes.measure import Measure
from inferchaos.probes.probe import BaseProbe, Measurement, RunView
from inferchaos.probes.verdict import observed_from_window, reasons_from_window
from inferchaos.probes.window import WINDOW_MEASURES, WindowStats, window


@dataclass(frozen=True)
class Windows:
    """The request log cut at the phases: before, during and after the fault."""

    baseline: WindowStats
    during: WindowStats
    recovery: WindowStats


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
