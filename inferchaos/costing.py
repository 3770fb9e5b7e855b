"""What an experiment cost and what it lost: GPU-seconds held (serving and warm pool apart)
turned into money with `--gpu-hour-price`, next to the SLO minutes lost — so "a warm pool
of 1 costs X a day and saved Y minutes of SLO breach" is a line in the report."""

from __future__ import annotations

from inferchaos.probes.cost import Prices, cost_line, run_cost, slo_loss
from inferchaos.probes.slo import ExperimentSlo
from inferchaos.targets.base import Target


def experiment_cost(result: object, target: Target, slo: ExperimentSlo, prices: Prices | None) -> dict | None:
    """For summary.json: over the whole run (baseline start to the end of the recovery window)."""
    phases = getattr(result, "phases", [])
    if not phases:
        return None
    start, end = phases[0].start, phases[-1].end
    t0, wall0 = result.t0, result.wall0  # type: ignore[attr-defined]
    loss = slo_loss(result.records, start, end, slo)  # type: ignore[attr-defined]
    out: dict = {"slo_minutes_lost": round(loss.minutes_lost, 3), "slo_windows_breached": loss.breached,
                 "window_s": round(end - start, 3)}
    if prices is None:
        out["line"] = f"SLO minutes lost: {loss.minutes_lost:.1f} (no --gpu-hour-price: no cost)"
        return out
    cost = run_cost(target.replica_records(), wall0 + start - t0, wall0 + end - t0, prices)
    return out | cost.to_dict() | {"line": cost_line(cost, loss)}
