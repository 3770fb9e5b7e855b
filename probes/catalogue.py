"""The probes every run starts, each declaring the target capabilities it needs."""

from __future__ import annotations

from typing import Any

from probes.autoscaling import ScaleProbe
from probes.cold_start import ColdStartProbe
from probes.gpu import GpuObserver
from probes.probe import Probe
from probes.queue_time import QueueTimeProbe


def standard_probes(target: Any) -> list[Probe]:
    return [
        GpuObserver(),
        QueueTimeProbe(urls=target.metrics_urls),
        ScaleProbe(view=getattr(target, "autoscaling", dict)),
        ColdStartProbe(replicas=target.replica_records),
    ]
