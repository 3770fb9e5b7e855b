"""The SLO vocabulary: every key an objective may be set on, assembled from what the probes
declare (probes/measure.py). The SLO file's checks, the relative and steady-state rules and
the SLO reference read it; a new key is a `Measure` where it is computed, and nothing else.
"""

from __future__ import annotations

from inferchaos.probes import canary, integrity, model_health, verdict, window
from inferchaos.probes.autoscaling import ScaleProbe
from inferchaos.probes.cold_start import ColdStartProbe
from inferchaos.probes.failover import FailoverProbe
from inferchaos.probes.gpu import GPU_MEASURES
from inferchaos.probes.measure import Measure
from inferchaos.probes.queue_time import QueueTimeProbe


def _assemble(*groups: tuple[Measure, ...]) -> dict[str, Measure]:
    out: dict[str, Measure] = {}
    for m in (m for g in groups for m in g):
        if m.name in out:
            raise ValueError(f"SLO key {m.name} is declared twice")
        out[m.name] = m
    return out


MEASURES: dict[str, Measure] = _assemble(
    window.WINDOW_MEASURES, window.LOAD_MEASURES, integrity.MEASURES, (verdict.RECOVERY,),
    FailoverProbe.measures, ColdStartProbe.measures, QueueTimeProbe.measures, ScaleProbe.measures,
    (canary.GOLDEN,), model_health.DRIFT, GPU_MEASURES,
)
#: may be bounded relative to the run's own baseline ("baseline * 2 + 200").
RELATIVE: tuple[str, ...] = tuple(k for k, m in MEASURES.items() if m.relative)
#: may be part of the steady-state hypothesis (judged on the baseline).
STEADY: tuple[str, ...] = tuple(k for k, m in MEASURES.items() if m.steady)
