"""The probes every run starts, each declaring the target capabilities it needs."""

from __future__ import annotations

from typing import Any

from inferchaos.probes.autoscaling import ScaleProbe
from inferchaos.probes.cold_start import ColdStartProbe
from inferchaos.probes.dcgm import DcgmProbe
from inferchaos.probes.failover import FailoverProbe
from inferchaos.probes.gpu import GpuObserver
from inferchaos.probes.probe import Probe
from inferchaos.probes.queue_time import QueueTimeProbe
from inferchaos.targets.capabilities import GPU


def gpu_probe(target: Any, prometheus_url: str | None = None) -> Probe:
    """GPU telemetry is read where the GPUs are: NVML where the runner's host has them (the
    local cluster); else (Kubernetes: the runner pod has none) dcgm-exporter's series of
    the serving pods, through Prometheus. One of the two, never both: they yield the same
    keys. A target that does not say what it has is taken as the runner's host."""
    has = getattr(target, "capabilities", None)
    if has is None or GPU in has():
        return GpuObserver()
    return DcgmProbe(url=prometheus_url, namespace=getattr(target, "namespace", None),
                     pods=lambda: [r.name for r in target.replica_records()])


def standard_probes(target: Any, fault: Any = None, prometheus_url: str | None = None) -> list[Probe]:
    """`fault`: whose casualties the failover probe follows; `prometheus_url`: where the
    DCGM probe reads GPU figures on a target whose GPUs NVML cannot see."""
    return [
        FailoverProbe(source=target.lb_source(), casualties=getattr(fault, "casualties", list),
                      known=target.replica_records, serving=target.replicas,
                      fault_name=getattr(fault, "name", "the fault")),
        gpu_probe(target, prometheus_url),
        QueueTimeProbe(urls=target.metrics_urls),
        ScaleProbe(view=getattr(target, "autoscaling", dict)),
        ColdStartProbe(replicas=target.replica_records),
    ]
