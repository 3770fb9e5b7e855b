"""Proof that the fault landed: every fault of the catalogue, planted so that it cannot
land, runs through the real engine (real load, real cluster) and is `inconclusive`,
naming the fault, with nothing left applied; the same faults unplanted land.

Each plant removes the effect at the lowest boundary the fault acts through (the signal
sent, the proxy's toxics, the hog's allocation, the surge's rate, the perturbation), so
the fault's own code runs as it would when a tool is missing from an image or a signal
goes to the wrong process.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Callable

import pytest

from inferchaos.faults.base import Fault
from inferchaos.faults.catalogue import lookup
from inferchaos.faults.ledger import Ledger
from inferchaos.engine import Experiment
from inferchaos.progress import Progress
from inferchaos.probes.slo import load_slo
from inferchaos.reports.writer import write_run, write_summary
from inferchaos.targets.local import LocalCluster
from tests.support.faultcases import snapshot
from tests.support.phases import short

pytestmark = pytest.mark.cluster

SHORT = short(hold_s=2, rate=40)


def no_signal(*_a, **_kw) -> bool:
    return True


def no_toxics(self, name, toxics):  # type: ignore[no-untyped-def]
    return {}


def trickle(real: Callable) -> Callable:
    """A surge whose load generator reaches 1 req/s of what was asked (CPU-starved)."""
    return lambda fault, factor, spawn_rate: dataclasses.replace(real(fault, factor, spawn_rate), rate=1.0)


#: fault id -> (how to build it, the plant: (module path, attribute, replacement) or None,
#: what the inconclusive reason must say). A plant of None means the parameters make it a no-op.
CASES: dict[str, tuple[Callable[[LocalCluster], Fault], tuple[str, str, object] | None, str]] = {
    "replica_crash": (lambda c: lookup("replica_crash").on(c), ("inferchaos.faults.local.base", "signal_group", no_signal),
                      "still running"),
    "replica_hang": (lambda c: lookup("replica_hang").on(c),
                     ("inferchaos.faults.local.replica_hang", "signal_group", no_signal), "not stopped"),
    "replica_restart": (lambda c: lookup("replica_restart").on(c, grace_s=0.5),
                        ("inferchaos.faults.local.replica_restart", "signal_group", no_signal), "still running"),
    "spot_reclamation": (lambda c: lookup("spot_reclamation").on(c, notice_s=0.5),
                         ("inferchaos.faults.local.spot_reclamation", "signal_group", no_signal), "still running"),
    "gpu_oom": (lambda c: lookup("gpu_oom").on(c, leave="100%"), None, "the hog holds nothing"),
    # armed, read by the shim, but every call still within `after`: nothing the server felt
    "cuda_errors": (lambda c: lookup("cuda_errors").on(c, after=10**9), None, "returned no CUDA error"),
    "model_load_stall": (lambda c: lookup("model_load_stall").on(c, stall_s=math.inf),
                         ("inferchaos.targets.local.depproxy", "ProxyControl.set_toxics", no_toxics), "model store route"),
    "dependency_latency": (lambda c: lookup("dependency_latency").on(c, latency_ms=300.0),
                           ("inferchaos.targets.local.depproxy", "ProxyControl.set_toxics", no_toxics), "feature_store route"),
    "pipeline_lag": (lambda c: lookup("pipeline_lag").on(c, mode="stop"),
                     ("inferchaos.faults.local.pipeline_lag", "signal_group", no_signal), "is not stopped"),
    "traffic_surge": (lambda c: lookup("traffic_surge").on(c, factor=3.0),
                      ("inferchaos.faults.endpoint.traffic_surge", "surge_profile", "trickle"), "req/s of"),
    "wrong_answers": (lambda c: lookup("wrong_answers").on(c, sigma=1e-12), None, "still answers the golden case"),
    "autoscaled_surge": (lambda c: lookup("autoscaled_surge").on(c, factor=4.0, max_replicas=2),
                         ("inferchaos.faults.local.autoscaled_surge", "surge_profile", "trickle"), "req/s of"),
}


@pytest.fixture(scope="module")
def cluster(standard_cluster: LocalCluster) -> LocalCluster:
    return standard_cluster


def run(cluster: LocalCluster, fault: Fault, tmp: Path):  # type: ignore[no-untyped-def]
    ledger = Ledger(tmp / "ledger.jsonl")
    fault.ledger, fault.experiment = ledger, fault.name
    slo = load_slo(None, fault.name, SHORT)
    lines: list[str] = []
    result = Experiment(fault.name, cluster, fault, slo, tmp / "run", ledger, Progress(lines.append)).run()
    return result, ledger, lines


def plant(monkeypatch: pytest.MonkeyPatch, spec: tuple[str, str, object] | None) -> None:
    if spec is None:
        return
    module, attr, value = spec
    import importlib

    owner: object = importlib.import_module(module)
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part)
    if value == "trickle":
        value = trickle(getattr(owner, name))
    monkeypatch.setattr(owner, name, value)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_fault_that_cannot_land_is_inconclusive_and_reverted(name, cluster, tmp_path, monkeypatch):
    before = snapshot(cluster)
    build, spec, says = CASES[name]
    plant(monkeypatch, spec)
    result, ledger, lines = run(cluster, build(cluster), tmp_path)
    monkeypatch.undo()
    assert result.verdict == "inconclusive", (result.verdict, result.error, result.failure_message())
    assert result.inconclusive and result.inconclusive.startswith(f"fault did not land ({name}: ")
    assert says in result.inconclusive, result.inconclusive
    assert result.landing and result.landing["landed"] is False
    assert result.slos == [], "a fault that did not land gets no SLO verdict"
    assert [p.name for p in result.phases] == ["baseline", "inject", "revert"], "no hold on a fault that did not land"
    assert result.failure_message().startswith(f"{name}: inconclusive: fault did not land")
    assert ledger.open_entries() == []
    assert snapshot(cluster) == before
    # the reports are written for a run that stopped after the revert, and say why
    summary = result.to_summary()
    write_run(summary, result.records, tmp_path / "report" / name, ledger)
    write_summary({"target": "local", "experiments": [summary]}, tmp_path / "report")
    assert (tmp_path / "report" / name / "timeline.png").stat().st_size > 0
    assert "fault did not land" in (tmp_path / "report" / "summary.html").read_text()


@pytest.mark.parametrize("name", ["replica_hang", "dependency_latency", "wrong_answers", "traffic_surge"])
def test_the_same_faults_unplanted_land_with_evidence(name, cluster, tmp_path):
    build, _, _ = CASES[name]
    fault = build(cluster)
    if name == "wrong_answers":
        fault = lookup("wrong_answers").on(cluster, sigma=2.0)
    result, ledger, _ = run(cluster, fault, tmp_path)
    assert result.landing and result.landing["landed"] is True, result.landing
    assert result.inconclusive is None and result.verdict in ("pass", "fail"), result.failure_message()
    assert ledger.open_entries() == []
