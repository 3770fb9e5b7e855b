"""How long after the revert the service was itself again, judged by the run's own error and
latency objectives (a recovery is "within objective", not "back to some fixed number")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from inferchaos.probes.measure import Measure
from inferchaos.probes.probe import BaseProbe, Measurement, RunView
from inferchaos.probes.verdict import recovery_time

RECOVERY = Measure("recovery_s", "<=", "s", "seconds after revert until the first of recovery_healthy_s consecutive "
                   "seconds with errors and p99 within objective", window="recovery")


@dataclass
class RecoveryProbe(BaseProbe):
    name: str = "recovery"
    keys: tuple[str, ...] = ("recovery_s",)
    measures: ClassVar[tuple[Measure, ...]] = (RECOVERY,)
    #: consecutive healthy seconds that count as recovered (the SLO file's recovery_healthy_s).
    healthy_s: int = 3

    def observe(self, run: RunView) -> list[Measurement]:
        start, end = run.span("recovery")
        took = recovery_time(run.records, start, end, run.objectives, healthy_s=self.healthy_s)
        why = None if took is not None else (f"errors or p99 were not within objective for {self.healthy_s} "
                                             f"consecutive seconds before the run ended")
        return [Measurement("recovery_s", took, why)]
