"""Cold starts: every replica that started during a window, and how long until ready.

A replacement that never turns ready is the worst cold start there is, so it is listed
(with how it ended) rather than left out of the figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar, Iterable, Protocol

from inferchaos.probes.measure import Measure

from inferchaos.probes.probe import BaseProbe, Measurement, RunView


class Replica(Protocol):
    name: str
    slot: int | None
    started_at: float
    ready_at: float | None
    died_at: float | None
    exit_code: int | None


@dataclass(frozen=True)
class ColdStart:
    replica: str
    #: seconds from the window's start (wall clock of the replica record).
    started_s: float
    #: start -> ready in seconds; None when it never got ready.
    cold_start_s: float | None
    #: ready | died (exit N) | still starting
    outcome: str
    standby: bool


def cold_starts(replicas: Iterable[Replica], start_wall: float, end_wall: float) -> list[ColdStart]:
    seen: dict[str, ColdStart] = {}
    for r in replicas:
        if not start_wall <= r.started_at < end_wall or r.name in seen:
            continue
        if r.ready_at is not None:
            outcome, took = "ready", round(r.ready_at - r.started_at, 3)
        elif r.died_at is not None:
            outcome, took = f"died (exit {r.exit_code})", None
        else:
            outcome, took = "still starting", None
        seen[r.name] = ColdStart(r.name, round(r.started_at - start_wall, 3), took, outcome, r.slot is None)
    return sorted(seen.values(), key=lambda c: c.started_s)


def worst(starts: list[ColdStart]) -> tuple[float | None, str | None]:
    """The cold_start_s observation: the slowest start, or None with the reason."""
    if not starts:
        return None, "no replica started during the run"
    never = [c for c in starts if c.cold_start_s is None]
    if never:
        return None, "; ".join(f"{c.replica} {c.outcome}, started at +{c.started_s:.1f}s" for c in never)
    return max(c.cold_start_s for c in starts if c.cold_start_s is not None), None


# ---------------------------------------------------------------------- as a probe
@dataclass(frozen=True)
class ColdStarts:
    """Every replica started between the inject and the end, with its cold start."""

    starts: tuple[ColdStart, ...] = ()


@dataclass
class ColdStartProbe(BaseProbe):
    """Every replica started between the inject and the end, read from the target's records."""

    name: str = "cold_start"
    keys: tuple[str, ...] = ("cold_start_s",)
    measures: ClassVar[tuple[Measure, ...]] = (
        Measure("cold_start_s", "<=", "s", "seconds from a replica's start until it is ready (the slowest started in "
                "the run)", window="after_inject"),
    )
    replicas: Callable[[], Iterable[Replica]] = list
    starts: list[ColdStart] = field(default_factory=list)

    def observe(self, run: RunView) -> list[Measurement]:
        start, end = (run.wall(t) for t in run.span("after_inject"))
        self.starts = cold_starts(self.replicas(), start, end)
        value, why = worst(self.starts)
        return [Measurement("cold_start_s", value, why)]

    def report(self) -> ColdStarts:
        return ColdStarts(tuple(self.starts))
