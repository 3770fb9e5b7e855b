"""The probe protocol: a probe whose capability the target lacks reports "not measured:
the target has no <capability>" by construction, one that has it observes the run; and
the standard probes say what they need."""

from __future__ import annotations

from dataclasses import dataclass

from inferchaos.probes.catalogue import standard_probes
from inferchaos.probes.gpu import GpuObserver
from inferchaos.probes.probe import BaseProbe, Measurement, RunView, measurements, unmet
from inferchaos.probes.queue_time import QueueTimeProbe
from inferchaos.probes.verdict import judge
from inferchaos.probes.slo import Objective
from inferchaos.targets import capabilities as caps

RUN = RunView(records=[], phases={"baseline": (0.0, 1.0), "inject": (1.0, 1.0), "hold": (1.0, 3.0),
                                  "revert": (3.0, 3.0), "recovery": (3.0, 5.0)}, t0=0.0, wall0=100.0)


@dataclass
class Counting(BaseProbe):
    """A probe of one file: counts the requests between inject and revert."""

    name: str = "counting"
    keys: tuple[str, ...] = ("gpu_xid_errors",)
    needs: frozenset[str] = frozenset({caps.GPU})
    observed: int = 0

    def observe(self, run: RunView) -> list[Measurement]:
        self.observed += 1
        return [Measurement("gpu_xid_errors", 0.0)]


def test_a_probe_lacking_its_capability_is_not_measured_by_construction():
    probe = Counting()
    (m,) = measurements([probe], frozenset({caps.LB_SLOTS}), RUN)
    assert m.value is None and probe.observed == 0, "never asked to observe"
    assert m.reason is not None and m.reason.startswith("the target has no GPU visible to NVML")
    (result,) = judge([Objective("gpu_xid_errors", "<=", 0, "errors")], {m.key: m.value}, {m.key: m.reason})
    assert not result.ok and result.detail.startswith("not measured: the target has no GPU")


def test_a_probe_with_its_capability_observes():
    probe = Counting()
    (m,) = measurements([probe], frozenset({caps.GPU}), RUN)
    assert (m.value, m.reason, probe.observed) == (0.0, None, 1)


def test_the_standard_probes_declare_their_needs():
    class Target:
        def metrics_urls(self) -> dict:
            return {}

        def replica_records(self) -> list:
            return []

        def autoscaling(self) -> dict:
            return {}

        def lb_source(self) -> object:
            return object()

        def replicas(self) -> list:
            return []

    probes = standard_probes(Target())
    needs = {p.name: p.needs for p in probes}
    assert needs == {"failover": {caps.LB_SLOTS}, "gpu": {caps.GPU}, "queue_time": {caps.METRICS},
                     "autoscaling": {caps.AUTOSCALER}, "cold_start": frozenset()}
    kube_like = frozenset({caps.LB_SLOTS, caps.AUTOSCALER})
    assert unmet(next(p for p in probes if isinstance(p, GpuObserver)), kube_like) is not None
    assert unmet(next(p for p in probes if isinstance(p, QueueTimeProbe)), kube_like) == \
        "the target has no replica metrics reachable from the runner"


def test_queue_time_without_answers_says_why():
    probe = QueueTimeProbe(urls=dict)
    for phase in ("baseline", "inject", "hold", "revert"):
        probe.mark(phase)
    (m,) = probe.observe(RUN)
    assert m.value is None and "vllm:request_queue_time_seconds" in (m.reason or "")


def test_failover_without_a_casualty_says_the_fault_removed_none():
    from inferchaos.probes.failover import FailoverProbe

    probe = FailoverProbe(fault_name="traffic_surge")
    assert [(m.key, m.value, m.reason) for m in probe.observe(RUN)] == [
        ("failover_s", None, "traffic_surge removed no replica"),
        ("replacement_s", None, "traffic_surge removed no replica")]
