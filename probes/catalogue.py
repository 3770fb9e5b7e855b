"""The probes every run starts, each declaring the target capabilities it needs."""

from __future__ import annotations

from typing import Any

from inferchaos.probes.answers import ModelHealthProbe
from inferchaos.probes.autoscaling import ScaleProbe
from inferchaos.probes.canary import Canary
from inferchaos.probes.cold_start import ColdStartProbe
from inferchaos.probes.dcgm import DcgmProbe
from inferchaos.probes.failover import FailoverProbe
from inferchaos.probes.gpu import GpuObserver
from inferchaos.probes.load_keys import LoadProbe
from inferchaos.probes.model_health import golden_set
from inferchaos.probes.probe import Probe
from inferchaos.probes.promql import PromQLProbe
from inferchaos.probes.queue_time import QueueTimeProbe
from inferchaos.probes.recovery import RecoveryProbe
from inferchaos.probes.requests import RequestProbe
from inferchaos.probes.self_canary import SelfCanary
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


def canary_for(target: Any, workload: Any = None) -> Canary | None:
    """The reference model's golden set where the target serves it; for any other server,
    its own baseline answers to fixed requests (self-consistency); else none."""
    model = target.golden_model()
    if model is not None:
        return Canary(target.lb_url, golden_set(model), model)
    if workload is not None and (workload.inputs or workload.api != "oip"):
        return SelfCanary(target.lb_url, workload)
    return None


def run_probes(slo: Any, open_loop: bool, canary: Canary | None, prometheus_url: str | None = None) -> list[Probe]:
    """What every run measures of itself whatever the target: the clients' windows, the
    load, the recovery, the answers, and the SLO file's PromQL objectives."""
    return [
        RequestProbe(),
        LoadProbe(open_loop=open_loop, constraints=dict(slo.goodput)),
        RecoveryProbe(healthy_s=slo.phases.recovery_healthy_s),
        ModelHealthProbe(canary=canary),
        PromQLProbe(objectives=tuple(slo.promql), url=prometheus_url),
    ]
