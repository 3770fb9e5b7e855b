"""What a probe declares of each key it yields: its name, direction, unit, meaning, the
numbers an objective on it may take, the window it is judged over, and whether a bound
relative to the baseline or a steady-state objective makes sense for it.

The SLO vocabulary is assembled from these declarations (probes/vocabulary.py): a new key
is a `Measure` in the probe that computes it, and nothing else lists it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Bound:
    """The numbers a key accepts; checked once, at load time, so a run never starts on nonsense."""

    low: float = 0.0
    low_open: bool = False
    high: float | None = None
    integer: bool = False

    def problem(self, v: float) -> str | None:
        if self.integer and not float(v).is_integer():
            return f"expected an integer, got {v:g}"
        too_low = v <= self.low if self.low_open else v < self.low
        if too_low or (self.high is not None and v > self.high):
            return f"must be {self.describe()}, got {v:g}"
        return None

    def describe(self) -> str:
        if self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"
        return f"{'>' if self.low_open else '>='} {self.low:g}"


FRACTION = Bound(0.0, high=1.0)
DURATION = Bound(0.0)
POSITIVE = Bound(0.0, low_open=True)
COUNT = Bound(1.0, integer=True)

#: The windows a key is judged over, in words (the engine's phases: baseline, inject, hold, revert, recovery).
WINDOWS = {
    "fault": "inject -> revert",
    "after_inject": "inject -> end",
    "run": "the whole run",
    "recovery": "revert -> end",
}


@dataclass(frozen=True)
class Measure:
    name: str
    #: ">=": more is better; "<=": less is better.
    op: str
    unit: str
    meaning: str
    bound: Bound = DURATION
    #: which window it is judged over (a key of WINDOWS).
    window: str = "fault"
    #: an objective may be relative to the baseline's own value ("baseline * 2 + 200").
    relative: bool = False
    #: it may be part of the steady-state hypothesis, judged on the baseline.
    steady: bool = False
    #: why it is missing when a window has requests but none that shows it ({span}: the window).
    missing: str = ""

    def __post_init__(self) -> None:
        if self.op not in (">=", "<=") or self.window not in WINDOWS:
            raise ValueError(f"measure {self.name}: op {self.op!r}, window {self.window!r}")
