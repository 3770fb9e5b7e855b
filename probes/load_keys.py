"""Whether the load was what was asked and what of it was useful: the open-loop schedule's
lag over the whole run, goodput against the SLO file's per-request constraints, and stream
integrity (answers that survived the fault say what they said before it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from inferchaos.probes import integrity as stream
from inferchaos.probes.measure import Measure
from inferchaos.probes.probe import BaseProbe, Measurement, RunView
from inferchaos.probes.window import LOAD_MEASURES, goodput, window


@dataclass
class LoadProbe(BaseProbe):
    name: str = "load"
    keys: tuple[str, ...] = ("schedule_lag_p99_ms", "goodput_rps", "stream_integrity")
    measures: ClassVar[tuple[Measure, ...]] = LOAD_MEASURES + stream.MEASURES
    #: closed-loop load has no schedule: its lag is not measured, and an objective on it is moot.
    open_loop: bool = True
    #: the SLO file's [goodput] constraints, per request.
    constraints: dict[str, float] = field(default_factory=dict)
    integrity: stream.Integrity | None = None

    def observe(self, run: RunView) -> list[Measurement]:
        if self.open_loop:
            lag = window(run.records, *run.span("run")).schedule_lag_p99_ms
            schedule = Measurement("schedule_lag_p99_ms", lag, None if lag is not None else "no request was scheduled")
        else:
            schedule = Measurement("schedule_lag_p99_ms", None, "closed-loop load has no schedule to keep",
                                   optional=True)
        rps = goodput(run.records, *run.span("fault"), self.constraints)
        self.integrity = stream.integrity(run.records, run.span("baseline"), run.span("after_inject"))
        return [schedule,
                Measurement("goodput_rps", rps, None if rps is not None else "no requests after injection"),
                Measurement("stream_integrity", self.integrity.rate,
                            None if self.integrity.rate is not None else self.integrity.reason)]

    def report(self) -> stream.Integrity | None:
        return self.integrity
