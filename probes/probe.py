"""The probe protocol: start, mark the phases, stop, observe the run as typed measurements.

Each probe is one object with one job, declares the SLO keys it measures and the target
capabilities it needs (`targets.capabilities`); the engine starts every probe before the
baseline, tells it when each phase begins, stops it in `finally`, and asks it for its
measurements once the run is over. A probe whose capability the target lacks is never
started: its keys are "not measured: the target has no <capability>" by construction. A
new probe is one file implementing this and one line in `probes.catalogue`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, Sequence

from inferchaos.probes.measure import Measure

from inferchaos.targets.capabilities import missing


@dataclass(frozen=True)
class Measurement:
    key: str
    value: float | None
    #: why `value` is None (judged as "not measured: <reason>").
    reason: str | None = None
    #: absent by design on this run (closed-loop load keeps no schedule): an objective on
    #: the key is judged optional instead of failing for want of a value.
    optional: bool = False


#: The spans a measure is judged over, as (phase, edge) pairs: the windows of
#: probes/measure.py's WINDOWS, and the baseline relative bounds are taken from.
SPANS: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "baseline": (("baseline", "start"), ("inject", "start")),
    "fault": (("inject", "start"), ("revert", "end")),
    "after_inject": (("inject", "start"), ("recovery", "end")),
    "run": (("baseline", "start"), ("recovery", "end")),
    "recovery": (("revert", "end"), ("recovery", "end")),
}


@dataclass(frozen=True)
class RunView:
    """What a probe may read of a finished run: the request log, each phase's (start,
    end) on the monotonic clock, the clocks' origin, and the run's resolved objectives."""

    records: Sequence[Any]
    phases: dict[str, tuple[float, float]]
    t0: float
    wall0: float
    objectives: Sequence[Any] = ()

    def at(self, phase: str, edge: str = "start") -> float:
        start, end = self.phases[phase]
        return start if edge == "start" else end

    def span(self, name: str) -> tuple[float, float]:
        """A named window (SPANS) on the monotonic clock: what a Measure's `window` means."""
        (p0, e0), (p1, e1) = SPANS[name]
        return self.at(p0, e0), self.at(p1, e1)

    def wall(self, t: float) -> float:
        return self.wall0 + (t - self.t0)

    def objective(self, key: str) -> Any:
        return next((o for o in self.objectives if o.key == key), None)


class Probe(Protocol):
    name: str
    #: the keys it yields (some only reported, such as GPU bytes).
    keys: tuple[str, ...]
    #: what it declares of the keys an objective may be set on (probes/vocabulary.py reads them).
    measures: ClassVar[tuple[Measure, ...]]
    #: the target capabilities it needs.
    needs: frozenset[str]

    def start(self) -> None: ...

    def mark(self, phase: str) -> None:
        """Called as each phase begins (baseline, inject, hold, revert, recovery)."""

    def stop(self) -> None: ...

    def observe(self, run: RunView) -> list[Measurement]: ...

    def report(self) -> Any:
        """What it found, typed, for the result and the reports (None: nothing beyond its keys)."""


@dataclass
class BaseProbe:
    """Defaults for the hooks a probe does not need."""

    name: str = "probe"
    keys: tuple[str, ...] = ()
    measures: ClassVar[tuple[Measure, ...]] = ()
    needs: frozenset[str] = field(default_factory=frozenset)

    def start(self) -> None:
        pass

    def mark(self, phase: str) -> None:
        pass

    def stop(self) -> None:
        pass

    def observe(self, run: RunView) -> list[Measurement]:
        raise NotImplementedError

    def report(self) -> Any:
        return None


def unmet(probe: Probe, has: frozenset[str]) -> str | None:
    return missing(probe.needs, has)


def measurements(probes: Sequence[Probe], has: frozenset[str], run: RunView) -> list[Measurement]:
    """Every probe's measurements; a probe lacking a capability says so for each key."""
    out: list[Measurement] = []
    for p in probes:
        why = unmet(p, has)
        out += [Measurement(k, None, why) for k in p.keys] if why else p.observe(run)
    return out
