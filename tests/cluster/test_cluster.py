"""The local cluster with all its real processes: HAProxy, replicas, stores, pipeline."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from inferchaos.targets.local import ClusterSpec, LocalCluster
from tests.support.waiting import wait_for
from inferchaos.targets.local.vgpu import MIB, VirtualDevice
from inferchaos.targets.local.state import read_state
from tests.support.leftovers import assert_nothing_left, live_groups

pytestmark = pytest.mark.cluster

ROW = [0.05 * i for i in range(16)]
BODY = {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": ROW}]}
HEADER = "x-inferchaos-replica"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("cluster")
    spec = ClusterSpec(replicas=3, provisioning_delay_s=1.0,
                       server_args=("--shutdown-timeout-s", "10", "--token-latency-ms", "20"))
    with LocalCluster(spec, state_dir, owner_pid=os.getpid()) as c:
        yield c
    assert_nothing_left(state_dir)


def wait_all_ready(cluster: LocalCluster, n: int = 3) -> None:
    def ok() -> bool:
        active = cluster.replicas()
        lb = {s.name: s for s in cluster.lb_servers()}
        return len(active) == n and all(r.phase == "ready" and lb.get(f"r{r.slot}") and lb[f"r{r.slot}"].up
                                        for r in active)
    wait_for(ok, 60, f"{n} replicas ready and up in the LB")


def test_every_replica_gives_the_same_answer_through_the_lb(cluster):
    wait_all_ready(cluster)
    seen: dict[str, list[float]] = {}
    with httpx.Client(base_url=cluster.lb_url, timeout=10) as client:
        deadline = time.monotonic() + 30
        while len(seen) < 3 and time.monotonic() < deadline:
            # Concurrent requests spread over replicas under leastconn.
            with ThreadPoolExecutor(6) as pool:
                for resp in pool.map(lambda _: client.post("/v2/models/mlp/infer", json=BODY), range(12)):
                    assert resp.status_code == 200, resp.text
                    seen[resp.headers[HEADER]] = resp.json()["outputs"][0]["data"]
    assert sorted(seen) == sorted(r.name for r in cluster.replicas())
    answers = {tuple(v) for v in seen.values()}
    assert len(answers) == 1, f"replicas disagree: {seen}"


class Traffic:
    """Background requests through the LB, each recorded with its time and outcome."""

    def __init__(self, url: str) -> None:
        self.url, self.records, self._stop = url, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.is_set():
                t = time.monotonic()
                try:
                    r = client.post("/v2/models/mlp/infer", json=BODY)
                    ok = r.status_code == 200 and "outputs" in r.json()
                    self.records.append((t, ok, r.headers.get(HEADER)))
                except httpx.HTTPError:
                    self.records.append((t, False, None))

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)


def test_sigkilled_replica_is_ejected_replaced_and_readmitted(cluster):
    wait_all_ready(cluster)
    victim = cluster.replicas()[0]
    slot = f"r{victim.slot}"
    with Traffic(cluster.lb_url) as traffic:
        wait_for(lambda: len(traffic.records) > 20, 20, "traffic flowing")
        killed_at = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        wait_for(lambda: not {s.name: s for s in cluster.admin().servers()}[slot].up, 20,
                 f"HAProxy marking {slot} down")
        replacement = wait_for(
            lambda: next((r for r in cluster.replicas() if r.slot == victim.slot and r.name != victim.name
                          and r.phase == "ready"), None), 60, "a replacement that loaded its model")
        wait_for(lambda: {s.name: s for s in cluster.admin().servers()}[slot].up, 30, f"{slot} back up in HAProxy")
        wait_for(lambda: any(name == replacement.name for t, ok, name in traffic.records[-50:]), 30,
                 "the replacement taking traffic")
    after = [r for r in traffic.records if r[0] > killed_at]
    assert sum(ok for _, ok, _ in after) > 20, "traffic did not continue after the kill"
    errors = sum(not ok for _, ok, _ in after)
    assert errors <= 0.05 * len(after), f"{errors} of {len(after)} requests failed after the kill"
    assert replacement.cold_start_s is not None and replacement.cold_start_s > 0
    assert any(h.name == victim.name and h.exit_code == -signal.SIGKILL for h in cluster.state.history)


def test_sigterm_drains_in_flight_requests(cluster):
    wait_all_ready(cluster)
    victim = cluster.replicas()[1]
    url = f"http://127.0.0.1:{victim.port}/v1/completions"
    body = {"model": "mlp", "prompt": "drain me", "max_tokens": 40}  # 40 x 20 ms: ~0.8 s each

    def complete() -> httpx.Response:
        return httpx.post(url, json=body, timeout=30)

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(complete) for _ in range(4)]
        time.sleep(0.3)  # let them get in flight; the assertion below does not depend on it
        os.kill(victim.pid, signal.SIGTERM)
        responses = [f.result() for f in futures]
    for resp in responses:
        assert resp.status_code == 200, resp.text
        assert len(resp.json()["choices"][0]["text"].split()) == 40
    history = wait_for(lambda: next((h for h in cluster.state.history if h.name == victim.name), None), 20,
                       "the drained replica's exit")
    assert history.exit_code == 0
    wait_all_ready(cluster)


def test_device_memory_exhaustion_gives_500_then_exit(cluster):
    wait_all_ready(cluster)
    victim = cluster.replicas()[2]
    device = VirtualDevice(cluster.state.vgpu_dir, victim.device)
    device.allocate(device.usage().free - 1 * MIB, tag="test-hog")  # the next batch cannot fit
    try:
        resp = httpx.post(f"http://127.0.0.1:{victim.port}/v2/models/mlp/infer", json=BODY, timeout=10)
        assert resp.status_code == 500
        assert "CUDA out of memory" in resp.json()["error"]
        history = wait_for(lambda: next((h for h in cluster.state.history if h.name == victim.name), None), 20,
                           "the OOMed replica's exit")
        assert history.exit_code == 1
    finally:
        device.free("test-hog")
    wait_all_ready(cluster)


def test_teardown_leaves_nothing_even_when_the_test_fails(tmp_path, planted):
    """A test that fails while using a cluster: the fixture still ends every process."""
    state_dir = tmp_path / "c"
    result = planted(f"""
import os
from inferchaos.targets.local import ClusterSpec, LocalCluster

def test_fails_midway():
    with LocalCluster(ClusterSpec(replicas=2), {str(state_dir)!r}, owner_pid=os.getpid()) as c:
        assert c.replicas()
        assert False, "planted failure"
""")
    assert result.ret == 1 and "planted failure" in result.stdout.str()
    assert_nothing_left(state_dir)


def test_sigkilled_supervisor_leaves_groups_that_down_ends(tmp_path):
    cluster = LocalCluster(ClusterSpec(replicas=2), tmp_path / "c").start()
    os.killpg(cluster.state.supervisor_pgid, signal.SIGKILL)
    assert cluster.replicas(), "replicas should outlive a SIGKILLed supervisor until `down`"
    killed = cluster.stop()
    assert killed, "stop() should have had to kill the orphaned groups"
    assert_nothing_left(tmp_path / "c")


def test_cluster_stops_itself_when_its_owner_dies(tmp_path, planted):
    state_dir = tmp_path / "c"
    result = planted(f"""
import os, signal
from inferchaos.targets.local import ClusterSpec, LocalCluster

def test_owner_killed():
    LocalCluster(ClusterSpec(replicas=1), {str(state_dir)!r}, owner_pid=os.getpid()).start()
    os.kill(os.getpid(), signal.SIGKILL)
""")
    assert result.ret == -signal.SIGKILL
    wait_for(lambda: read_state(state_dir) and not live_groups(state_dir), 30,
             "the cluster to stop after its owner died")
    assert_nothing_left(state_dir)
