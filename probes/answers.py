"""Right answers, not only answers: the golden-set canary judged over inject -> end, and the
predictions of the fault window against the baseline's (drift).

The canary runs through every phase; where the target serves the reference model its golden
set is the reference, for any other server its own baseline answers to fixed requests are
(self-consistency, frozen as the fault is injected)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from inferchaos.probes.canary import GOLDEN, Canary, Check, GoldenWindow, golden_window
from inferchaos.probes.measure import Measure
from inferchaos.probes.model_health import DRIFT, DriftResult, drift
from inferchaos.probes.probe import BaseProbe, Measurement, RunView
from inferchaos.probes.self_canary import SelfCanary

NO_GOLDEN_SET = ("no golden set: the reference model's is unknown to this server, and no fixed request could be "
                 "built from its metadata")


@dataclass(frozen=True)
class ModelHealth:
    golden: GoldenWindow | None
    drift: DriftResult


@dataclass
class ModelHealthProbe(BaseProbe):
    name: str = "model_health"
    keys: tuple[str, ...] = ("golden_pass_rate", "prediction_psi", "prediction_ks_pvalue")
    measures: ClassVar[tuple[Measure, ...]] = (GOLDEN, *DRIFT)
    canary: Canary | None = None
    checks: list[Check] = field(default_factory=list)
    report_: ModelHealth | None = None

    def start(self) -> None:
        if self.canary is not None:
            self.canary.start()

    def mark(self, phase: str) -> None:
        # a self-consistent canary's reference is what the server answered before the fault
        if phase == "inject" and isinstance(self.canary, SelfCanary):
            self.canary.freeze()

    def stop(self) -> None:
        if self.canary is not None:
            self.checks = self.canary.stop()

    def observe(self, run: RunView) -> list[Measurement]:
        golden, golden_why = None, NO_GOLDEN_SET
        if self.canary is not None:
            golden = golden_window(self.checks, *run.span(GOLDEN.window))
            golden_why = f"no golden-set answer came back between inject and the end ({golden.unanswered} unanswered)"
            unstable = self.canary.unstable if isinstance(self.canary, SelfCanary) else []
            if unstable:
                golden_why += f"; the baseline's own answers differed for {', '.join(unstable)} (not deterministic)"

        def predictions(start: float, end: float) -> list[float]:
            return [r.prediction for r in run.records if start <= r.start < end and r.ok
                    and r.prediction is not None]

        before, during = predictions(*run.span("baseline")), predictions(*run.span(DRIFT[0].window))
        moved = drift(before, during, bins=max(2, min(10, min(len(before), len(during)) // 25)))
        self.report_ = ModelHealth(golden, moved)
        rate = golden.pass_rate if golden is not None else None
        drift_why = None if moved.measured else f"{moved.reason.removeprefix('not measured: ')} (infer answers' predictions)"
        return [Measurement("golden_pass_rate", rate, None if rate is not None else golden_why),
                Measurement("prediction_psi", moved.psi, drift_why if moved.psi is None else None),
                Measurement("prediction_ks_pvalue", moved.ks_pvalue, drift_why if moved.ks_pvalue is None else None)]

    def report(self) -> ModelHealth | None:
        return self.report_
