"""The probes every run starts, each declaring the target capabilities it needs."""

from __future__ import annotations

from typing import Any

from inferchaos.probes.autoscaling import ScaleProbe
from inferchaos.probes.cold_start import ColdStartProbe
from inferchaos.probes.failover import FailoverProbe
from inferchaos.probes.gpu import GpuObserver
from inferchaos.probes.probe import Probe
from inferchaos.probes.queue_time import QueueTimeProbe


def standard_probes(target: Any, fault: Any = None) -> list[Probe]:
    """`fault`: whose casualties the failover probe follows."""
    return [
        FailoverProbe(source=target.lb_source(), casualties=getattr(fault, "casualties", list),
                      known=target.replica_records, serving=target.replicas,
                      fault_name=getattr(fault, "name", "the fault")),
        GpuObserver(),
        QueueTimeProbe(urls=target.metrics_urls),
        ScaleProbe(view=getattr(target, "autoscaling", dict)),
        ColdStartProbe(replicas=target.replica_records),
    ]
