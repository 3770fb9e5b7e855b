"""Objectives × observations → SLO results, and the run's verdict.

The rules that make a verdict honest: a missing measurement fails (unless the objective
was declared optional), NaN never passes, and the boundary is exact — an observation
equal to its objective meets it, whichever the direction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from inferchaos.probes.window import WINDOW_MEASURES, Record, WindowStats, series

if TYPE_CHECKING:  # the SLO file's types; at run time verdicts need only their fields
    from inferchaos.probes.slo import ExperimentSlo, Objective

#: The window statistics an objective can be judged on directly (declared in probes/window.py).
WINDOW_KEYS = tuple(m.name for m in WINDOW_MEASURES)



@dataclass(frozen=True)
class SloResult:
    name: str
    #: the bound, e.g. "<= 2000 ms".
    objective: str
    observed: float | None
    ok: bool
    optional: bool
    #: e.g. "observed 2375.1 ms", or "not measured: no requests in window".
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'} {self.name} {self.objective}: {self.detail}"


def meets(objective: Objective, observed: float) -> bool:
    """Exact comparison in the objective's direction; NaN meets nothing."""
    if math.isnan(observed):
        return False
    if objective.op == ">=":
        return observed >= objective.value
    if objective.op == "<=":
        return observed <= objective.value
    raise ValueError(f"{objective.key}: unknown comparison {objective.op!r}")


def judge(objectives: Iterable[Objective], observed: Mapping[str, float | None],
          reasons: Mapping[str, str] | None = None) -> list[SloResult]:
    """One result per objective. `reasons` explains, per key, why a value is missing."""
    reasons = reasons or {}
    results = []
    for o in objectives:
        value = observed.get(o.key)
        if value is None:
            why = reasons.get(o.key, "no measurement")
            label = "not measured (optional)" if o.optional else "not measured"
            results.append(SloResult(o.key, o.target(), None, o.optional, o.optional, f"{label}: {why}"))
        elif math.isnan(value):
            results.append(SloResult(o.key, o.target(), value, False, o.optional, "invalid measurement: NaN"))
        else:
            ok = meets(o, value)
            results.append(SloResult(o.key, o.target(), value, ok, o.optional, f"observed {_show(o, value, ok)}"))
    return results


def resolve(objectives: Iterable[Objective], baseline: WindowStats) -> tuple[list[Objective], dict[str, str]]:
    """Relative bounds ("baseline * 2 + 200") made numbers from the run's own baseline, and
    the keys that cannot be judged because the baseline measured nothing to be relative to."""
    before = observed_from_window(baseline)
    resolved = [o.resolve(before.get(o.key)) for o in objectives]
    moot = {o.key: f"relative to the baseline, which measured no {o.key}" for o in resolved
            if o.relative is not None and o.baseline is None and o.limit is None}
    return resolved, moot


def verdict(results: Sequence[SloResult]) -> str:
    """"pass" only if every result is ok. Nothing judged is "fail": a run that measured
    nothing has shown nothing."""
    return "pass" if results and all(r.ok for r in results) else "fail"


def breached(results: Iterable[SloResult]) -> list[SloResult]:
    return [r for r in results if not r.ok]


def observed_from_window(stats: WindowStats) -> dict[str, float | None]:
    return {key: getattr(stats, key) for key in WINDOW_KEYS}


def reasons_from_window(stats: WindowStats) -> dict[str, str]:
    """Why each missing value of `observed_from_window` is missing, for `judge`: each
    measure says what its absence means (no stream, no feature header)."""
    span = f"[{stats.start:.1f}, {stats.end:.1f})"
    if stats.requests == 0:
        return {key: f"no requests in window {span}" for key in WINDOW_KEYS}
    return {m.name: m.missing.format(span=span) for m in WINDOW_MEASURES
            if m.missing and getattr(stats, m.name) is None}


def recovery_time(records: Iterable[Record], revert_at: float, end: float,
                  objectives: ExperimentSlo | Iterable[Objective], step_s: float = 1.0,
                  healthy_s: int = 3) -> float | None:
    """Seconds after `revert_at` until the first of `healthy_s` consecutive `step_s`
    windows that are all within the error objective (availability and/or error_rate) and
    the p99_ms objective. None when that never happens before `end`, or there was no
    traffic: a missing measurement, which fails the recovery_s objective. One noisy
    second after the service came back does not undo the recovery.

    A window without requests is not healthy: a hung service starts no new requests."""
    if healthy_s < 1:
        raise ValueError(f"healthy_s must be 1 or more, got {healthy_s}")
    objs: list[Any] = list(getattr(objectives, "objectives", objectives))
    criteria = [o for o in objs if o.key in ("availability", "error_rate", "p99_ms")]
    if not criteria:
        raise ValueError("recovery needs an availability, error_rate or p99_ms objective")
    windows = series(records, revert_at, end, step_s)
    # A trailing sliver shorter than a step holds too few requests to judge; keep it out.
    if len(windows) > 1 and windows[-1].end - windows[-1].start < step_s:
        windows = windows[:-1]
    run_from: float | None = None
    run = 0
    for w in windows:
        if w.requests > 0 and all(_within(o, w) for o in criteria):
            run_from = w.start if run == 0 else run_from
            run += 1
            if run >= healthy_s:
                assert run_from is not None
                return run_from - revert_at
        else:
            run = 0
    return None


def _within(o: Objective, w: WindowStats) -> bool:
    value = getattr(w, o.key)
    return value is not None and meets(o, value)


def _show(o: Objective, value: float, ok: bool) -> str:
    unit = "" if o.unit in ("fraction", "") else f" {o.unit}"
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    if not ok and text == f"{o.value:g}":  # rounding must not hide why it failed
        text = repr(value)
    return text + unit
