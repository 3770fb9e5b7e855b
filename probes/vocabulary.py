"""The SLO vocabulary: every key an objective may be set on, assembled from what the probes
declare (probes/measure.py). The SLO file's checks, the relative and steady-state rules and
the SLO reference read it; a new key is a `Measure` where it is computed, and nothing else.
"""

from __future__ import annotations

from inferchaos.probes.answers import ModelHealthProbe
from inferchaos.probes.autoscaling import ScaleProbe
from inferchaos.probes.cold_start import ColdStartProbe
from inferchaos.probes.dcgm import DcgmProbe
from inferchaos.probes.failover import FailoverProbe
from inferchaos.probes.gpu import GpuObserver
from inferchaos.probes.load_keys import LoadProbe
from inferchaos.probes.measure import Measure
from inferchaos.probes.queue_time import QueueTimeProbe
from inferchaos.probes.recovery import RecoveryProbe
from inferchaos.probes.requests import RequestProbe

#: every probe whose keys an objective may name (the SLO file's own PromQL keys aside).
PROBES = (RequestProbe, LoadProbe, RecoveryProbe, FailoverProbe, ColdStartProbe, QueueTimeProbe, ScaleProbe,
          ModelHealthProbe, GpuObserver, DcgmProbe)


def _assemble(*groups: tuple[Measure, ...]) -> dict[str, Measure]:
    """One Measure per key; two probes may yield the same key only with the same declaration
    (NVML and DCGM: the GPU's keys, read where the GPUs are)."""
    out: dict[str, Measure] = {}
    for m in (m for g in groups for m in g):
        if m.name in out and out[m.name] is not m:
            raise ValueError(f"SLO key {m.name} is declared twice")
        out[m.name] = m
    return out


MEASURES: dict[str, Measure] = _assemble(*(cls.measures for cls in PROBES))
#: may be bounded relative to the run's own baseline ("baseline * 2 + 200").
RELATIVE: tuple[str, ...] = tuple(k for k, m in MEASURES.items() if m.relative)
#: may be part of the steady-state hypothesis (judged on the baseline).
STEADY: tuple[str, ...] = tuple(k for k, m in MEASURES.items() if m.steady)
