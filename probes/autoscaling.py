"""Did the autoscaler bring capacity in time? Measured, not assumed.

Sampled through the run: the replicas the autoscaler wants and those ready. From them,
after the surge begins (inject): when it decided to scale (`decision_s`), when the new
capacity was ready (`capacity_s`), and `scale_out_s` — when the new capacity was ready
*and* the client's p99 was back within objective for good. A target whose autoscaling is
off has no scale-out: `scale_out_s` is not measured, which fails it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Sequence

from inferchaos.probes.measure import Measure
from inferchaos.probes.probe import BaseProbe, Measurement, RunView
from inferchaos.probes.window import Record, series
from inferchaos.targets.capabilities import AUTOSCALER


@dataclass(frozen=True)
class ScaleSample:
    t: float
    enabled: bool
    desired: int | None
    ready: int


@dataclass(frozen=True)
class ScaleOut:
    enabled: bool
    ready_at_inject: int | None
    max_desired: int | None
    max_ready: int | None
    decision_s: float | None
    capacity_s: float | None
    scale_out_s: float | None
    #: why scale_out_s is missing, when it is.
    reason: str | None = None


class ScaleSampler:
    """Calls `view()` (a target's `autoscaling()`) every `interval_s` on the run's clock."""

    def __init__(self, view: Callable[[], dict], interval_s: float = 0.25) -> None:
        self.view, self.interval_s = view, interval_s
        self.samples: list[ScaleSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scale-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                v = self.view()
            except Exception:  # noqa: BLE001 - a state file mid-rewrite: the next tick reads it
                v = None
            if v is not None:
                self.samples.append(ScaleSample(t, bool(v.get("enabled")), v.get("desired"), int(v.get("ready", 0))))
            self._stop.wait(self.interval_s)

    def start(self) -> ScaleSampler:
        self._thread.start()
        return self

    def stop(self) -> list[ScaleSample]:
        self._stop.set()
        self._thread.join(5)
        return self.samples


def analyse(samples: Sequence[ScaleSample], records: Sequence[Record], inject: float, until: float,
            p99_objective_ms: float | None) -> ScaleOut:
    before = [s for s in samples if s.t <= inject]
    after = [s for s in samples if inject < s.t <= until]
    if not any(s.enabled for s in samples):
        return ScaleOut(False, None, None, None, None, None, None, "autoscaling is off on this target")
    base = before[-1] if before else (after[0] if after else None)
    if base is None:
        return ScaleOut(True, None, None, None, None, None, None, "no autoscaler sample in the run")
    wanted = [s.desired for s in after if s.desired is not None]
    max_desired, max_ready = max(wanted, default=base.desired), max((s.ready for s in after), default=base.ready)
    decided = next((s for s in after if s.desired is not None and base.desired is not None
                    and s.desired > base.desired), None)
    target = decided.desired if decided else base.desired
    capacity = next((s for s in after if decided and s.t >= decided.t and target is not None and s.ready >= target),
                    None)
    decision_s = None if decided is None else round(decided.t - inject, 3)
    capacity_s = None if capacity is None else round(capacity.t - inject, 3)
    calm = _p99_back(records, inject, until, p99_objective_ms)
    if decided is None:
        # no scale-out was needed (a pre-heated fleet): what counts is the tail
        if calm is None:
            return ScaleOut(True, base.ready, max_desired, max_ready, None, None, None,
                            "the autoscaler asked for no more replicas and p99 stayed above objective")
        return ScaleOut(True, base.ready, max_desired, max_ready, None, None, round(calm - inject, 3))
    if capacity is None:
        return ScaleOut(True, base.ready, max_desired, max_ready, decision_s, None, None,
                        f"the autoscaler asked for {target} replicas; they were not all ready before the fault ended")
    if calm is None:
        return ScaleOut(True, base.ready, max_desired, max_ready, decision_s, capacity_s, None,
                        "new capacity was ready, but p99 never came back within objective during the surge")
    return ScaleOut(True, base.ready, max_desired, max_ready, decision_s, capacity_s,
                    round(max(capacity.t, calm) - inject, 3))


def _p99_back(records: Sequence[Record], start: float, end: float, objective_ms: float | None,
              step_s: float = 1.0) -> float | None:
    """The start of the first 1-s window from which every later window up to `end` has its
    p99 within objective (no objective: every window with requests counts)."""
    windows = series(records, start, end, step_s)
    if len(windows) > 1 and windows[-1].end - windows[-1].start < step_s:
        windows = windows[:-1]
    since: float | None = None
    for w in windows:
        ok = w.requests > 0 and (objective_ms is None or (w.p99_ms is not None and w.p99_ms <= objective_ms))
        if not ok:
            since = None
        elif since is None:
            since = w.start
    return since


# ---------------------------------------------------------------------- as a probe
@dataclass(frozen=True)
class Scaling:
    """The autoscaler through the run: its samples, and the scale-out they showed (None
    before the run was judged)."""

    scale_out: ScaleOut | None
    samples: tuple[ScaleSample, ...] = ()


@dataclass
class ScaleProbe(BaseProbe):
    """The autoscaler sampled through the run; scale_out_s over inject -> revert, against
    the run's own p99 objective."""

    name: str = "autoscaling"
    keys: tuple[str, ...] = ("scale_out_s",)
    measures: ClassVar[tuple[Measure, ...]] = (
        Measure("scale_out_s", "<=", "s", "seconds from the surge's start until the capacity the autoscaler asked for "
                "was ready and p99 back within objective"),
    )
    needs: frozenset[str] = frozenset({AUTOSCALER})
    view: Callable[[], dict] = dict
    samples: list[ScaleSample] = field(default_factory=list)
    result: ScaleOut | None = None

    def start(self) -> None:
        self._sampler = ScaleSampler(self.view).start()

    def stop(self) -> None:
        self.samples = self._sampler.stop()

    def report(self) -> Scaling:
        return Scaling(self.result, tuple(self.samples))

    def observe(self, run: RunView) -> list[Measurement]:
        if not self.samples:
            return [Measurement("scale_out_s", None, "this target reports no autoscaler")]
        p99 = run.objective("p99_ms")
        self.result = analyse(self.samples, run.records, *run.span("fault"), p99.value if p99 else None)
        return [Measurement("scale_out_s", self.result.scale_out_s, self.result.reason)]
