"""Spot reclamation on the real local cluster: it takes effect, and its undo restores."""

from __future__ import annotations

import os
import threading

import httpx
import pytest

from inferchaos.faults.ledger import Ledger
from inferchaos.faults.specs.spot_reclamation import spot_reclamation
from inferchaos.ground.errors import UsageError
from inferchaos.targets.local import ClusterSpec, LocalCluster
from tests.support.waiting import wait_for
from inferchaos.targets.local.control import read_desired
from inferchaos.targets.local.processes import group_alive
from tests.support.leftovers import assert_nothing_left

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    d = tmp_path_factory.mktemp("spot")
    # A long drain lets the deadline, not the drain, end the victim: requests still in flight.
    spec = ClusterSpec(replicas=3, provisioning_delay_s=1.0,
                       server_args=("--shutdown-timeout-s", "30", "--token-latency-ms", "50"))
    with LocalCluster(spec, d, owner_pid=os.getpid()) as c:
        yield c
    assert_nothing_left(d)


def all_ready(cluster: LocalCluster, n: int = 3) -> bool:
    return len(cluster.replicas()) == n and all(r.phase == "ready" for r in cluster.replicas())


def test_notice_then_kill_at_deadline_with_requests_in_flight(cluster, tmp_path):
    wait_for(lambda: all_ready(cluster), 60, "3 ready replicas")
    ledger = Ledger(tmp_path / "ledger.jsonl")
    fault = spot_reclamation.on(cluster, ledger=ledger, notice_s=1.0, replicas="1", provisioning_delay_s=4.0)
    victim = fault.choose()[0]
    long_request = {"model": "mlp", "prompt": "long", "max_tokens": 200}  # 200 x 50 ms = 10 s
    outcome: list[str] = []

    def in_flight() -> None:
        try:
            r = httpx.post(f"http://127.0.0.1:{victim.port}/v1/completions", json=long_request, timeout=30)
            outcome.append(f"HTTP {r.status_code}")
        except httpx.HTTPError as exc:
            outcome.append(type(exc).__name__)

    t = threading.Thread(target=in_flight)
    t.start()
    wait_for(lambda: httpx.get(f"http://127.0.0.1:{victim.port}/metrics").text.count(
        'vllm:num_requests_running{model_name="mlp"} 1.0') == 1, 10, "the request in flight")
    fault.prepare()
    assert read_desired(cluster.state_dir) == {}, "no warm pool asked: nothing to prepare"
    fault.inject()
    assert read_desired(cluster.state_dir) == {"provisioning_delay_s": 4.0}
    assert [e.what for e in fault.events] == ["notice"]
    wait_for(lambda: fault.first("sigkill", victim.name), 10, "SIGKILL at the deadline")
    t.join(15)
    assert outcome and outcome[0] != "HTTP 200", "the in-flight request should have been cut off"
    died = wait_for(lambda: fault.died_at(victim.name), 10, "the victim's death noted")
    notice = fault.first("notice", victim.name).t
    assert died is not None and 0.9 <= died - notice <= 3.0
    assert not group_alive(victim.pgid)
    # Replacement only after the provisioning delay, then a cold start.
    wait_for(lambda: any(h.name == victim.name for h in cluster.state.history), 10, "the supervisor seeing the death")
    assert not any(r.slot == victim.slot for r in cluster.replicas()), "replaced before the provisioning delay"
    fault.revert()
    assert read_desired(cluster.state_dir) == {}, "undo must restore the runtime settings"
    replacement = wait_for(lambda: next((r for r in cluster.replicas() if r.slot == victim.slot
                                         and r.phase == "ready"), None), 60, "the replacement")
    assert replacement.started_at - victim.started_at > 0
    assert replacement.cold_start_s and replacement.cold_start_s > 0
    assert ledger.open_entries() == []
    fault.revert()  # idempotent


def test_blast_radius_refuses_to_take_the_whole_service(cluster, tmp_path):
    wait_for(lambda: all_ready(cluster), 60, "3 ready replicas")
    for radius in ("3", "100%"):
        fault = spot_reclamation.on(cluster, ledger=Ledger(tmp_path / "l.jsonl"), replicas=radius)
        with pytest.raises(UsageError, match="at most 2"):
            fault.plan()
    with pytest.raises(UsageError, match="blast radius"):
        spot_reclamation.on(cluster, ledger=Ledger(tmp_path / "l.jsonl"), replicas="150%")
    assert not (tmp_path / "l.jsonl").exists(), "nothing may be journalled (or done) for a refused fault"


def test_plan_changes_nothing(cluster, tmp_path):
    wait_for(lambda: all_ready(cluster), 60, "3 ready replicas")
    before = [(r.name, r.pid) for r in cluster.replicas()]
    lines = spot_reclamation.on(cluster, ledger=Ledger(tmp_path / "l.jsonl"), notice_s=5).plan()
    assert any(line.startswith("SIGTERM replica-") for line in lines)
    assert [(r.name, r.pid) for r in cluster.replicas()] == before


def test_warm_pool_replica_takes_the_slot_at_once(cluster, tmp_path):
    wait_for(lambda: all_ready(cluster), 60, "3 ready replicas")
    ledger = Ledger(tmp_path / "ledger.jsonl")
    # A provisioning delay far beyond the test: only the warm pool can refill the slot.
    fault = spot_reclamation.on(cluster, ledger=ledger, notice_s=0.5, provisioning_delay_s=300.0, warm_pool=1)
    fault.prepare()
    (standby,) = [r for r in cluster.state.standby() if r.phase == "ready"]
    fault.inject()
    (victim,) = fault.victims
    promoted = wait_for(lambda: next((r for r in cluster.replicas() if r.slot == victim.slot
                                      and r.name == standby.name), None), 20, "the warm replica promoted")
    assert promoted.port == standby.port
    wait_for(lambda: {s.name: s for s in cluster.admin().servers()}[f"r{victim.slot}"].up, 20,
             "the promoted replica up in the LB")
    fault.revert()
    assert read_desired(cluster.state_dir) == {}
    # Back to the spec: 3 active, no warm pool (the standby being provisioned is cancelled).
    wait_for(lambda: all_ready(cluster) and not cluster.state.standby(), 30, "3 active replicas and no standby")
    assert ledger.open_entries() == []
