"""The fake kubelet runs containers as real processes in real pid namespaces: what an exec'd
command does is what the kernel does, not what our faults expect. Each test drives it as a
fault does, through the real `kubernetes` client (exec over the websocket, DELETE), and reads
the consequences back from the API and from /proc inside the container.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from kubernetes import client
from kubernetes.stream import stream

from tests.fakekube import FakeKube
from tests.fakekube.cluster import FakeCluster
from tests.support.leftovers import processes_mentioning
from tests.support.waiting import wait_for

NS = "ml"
REPO = Path(__file__).resolve().parents[2]
#: the server's pid(s), found by their command line; the pattern's `[.]` keeps this very shell out
FIND_SERVER = ["sh", "-c", "for p in /proc/[0-9]*; do case \"$(tr '\\0' ' ' < $p/cmdline)\" in "
                           "*container_server[.]py*) echo ${p#/proc/};; esac; done"]


@pytest.fixture
def make() -> Iterator[Callable[..., tuple[FakeKube, FakeCluster]]]:
    stack: list[tuple[FakeKube, FakeCluster]] = []

    def start(share: bool = True, replicas: int = 1) -> tuple[FakeKube, FakeCluster]:
        fake = FakeKube().start()
        cluster = FakeCluster(fake, namespace=NS, replicas=replicas, share_process_namespace=share)
        stack.append((fake, cluster))
        return fake, cluster.seed().start()

    yield start
    for fake, cluster in reversed(stack):
        cluster.stop()
        fake.stop()


def exec_(fake: FakeKube, pod: str, argv: list[str]) -> tuple[str, str, dict[str, Any]]:
    """As the faults exec: the real client's websocket stream, stdout, stderr and the status."""
    api_client = fake.api_client()
    try:
        resp = stream(client.CoreV1Api(api_client).connect_get_namespaced_pod_exec, pod, NS, container="server",
                      command=argv, stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
        resp.run_forever(timeout=30)
        out, err, status = resp.read_stdout() or "", resp.read_stderr() or "", resp.read_channel(3)
        resp.close()
    finally:
        api_client.close()
    return out, err, json.loads(status)


def state_of(fake: FakeKube, pod: str, pid: str) -> str:
    out, _, status = exec_(fake, pod, ["cat", f"/proc/{pid}/stat"])
    assert status["status"] == "Success", (out, status)
    return out.rsplit(")", 1)[1].split()[0]


def server_pid(fake: FakeKube, pod: str) -> str:
    out, _, _ = exec_(fake, pod, FIND_SERVER)
    (pid,) = out.split()
    return pid


def container_status(cluster: FakeCluster, pod: str) -> dict[str, Any]:
    (cs,) = cluster.pod(pod)["status"]["containerStatuses"]
    return cs


def only_pod(cluster: FakeCluster) -> str:
    (pod,) = cluster.ready_pods()
    return pod


def test_pid_1_ignores_sigstop_and_sigkill_from_inside_its_namespace(make) -> None:
    fake, cluster = make(share=False)
    pod = only_pod(cluster)
    assert server_pid(fake, pod) == "1", "without a shared process namespace the server is PID 1"
    for argv in (["kill", "-STOP", "1"], ["kill", "-KILL", "1"]):
        _, _, status = exec_(fake, pod, argv)
        assert status["status"] == "Success", status  # kill(2) succeeds; the kernel drops the signal
    assert state_of(fake, pod, "1") == "S"
    time.sleep(1.0)  # five probe periods
    assert cluster.ready_pods() == [pod]
    assert container_status(cluster, pod)["restartCount"] == 0


def test_sigstop_of_the_server_by_its_pid_turns_the_pod_unready_and_sigcont_ready(make) -> None:
    fake, cluster = make(share=True)
    pod = only_pod(cluster)
    pid = server_pid(fake, pod)
    assert pid != "1", "a pause process is PID 1 of a shared process namespace"
    assert exec_(fake, pod, ["kill", "-STOP", pid])[2]["status"] == "Success"
    assert state_of(fake, pod, pid) == "T"
    wait_for(lambda: not cluster.ready_pods(), 5, "the stopped server fails its readiness probe")
    assert container_status(cluster, pod)["ready"] is False
    assert exec_(fake, pod, ["kill", "-CONT", pid])[2]["status"] == "Success"
    wait_for(lambda: cluster.ready_pods() == [pod], 5, "Ready again once resumed")
    assert container_status(cluster, pod)["restartCount"] == 0


def test_a_killed_server_is_restarted_with_its_exit_code_in_last_state(make) -> None:
    fake, cluster = make(share=True)
    pod = only_pod(cluster)
    pid = server_pid(fake, pod)
    assert exec_(fake, pod, ["kill", "-KILL", pid])[2]["status"] == "Success"
    cs = wait_for(lambda: (c := container_status(cluster, pod))["restartCount"] == 1 and c, 5, "a restart")
    term = cs["lastState"]["terminated"]
    assert term["exitCode"] == 137 and term["reason"] == "Error" and term["finishedAt"], term
    wait_for(lambda: cluster.ready_pods() == [pod], 5, "the restarted server Ready")
    assert server_pid(fake, pod) != pid


def test_a_graceful_delete_sends_sigterm_and_finalizes_before_the_grace_ends(make) -> None:
    fake, cluster = make(share=True)
    pod = only_pod(cluster)
    address = cluster.address(pod)
    assert address and processes_mentioning(f"--host {address[0]} --port {address[1]}")
    pods = fake.store.resource("", "v1", "pods")
    since = fake.store.resource_version
    t0 = time.monotonic()
    if hasattr(fake, "finalize_pod"):
        api_client = fake.api_client()
        try:
            client.CoreV1Api(api_client).delete_namespaced_pod(pod, NS, grace_period_seconds=5)
        finally:
            api_client.close()
    else:  # until the API server does graceful deletion: what it will do to the pod
        def mark(p: dict[str, Any]) -> dict[str, Any]:
            p["metadata"].update(deletionTimestamp="2099-01-01T00:00:00Z", deletionGracePeriodSeconds=5)
            return p

        fake.store.update(pods, NS, pod, mark)
    wait_for(lambda: not fake.exists("", "v1", "pods", pod, NS), 10, "the pod finalized")
    assert time.monotonic() - t0 < 4.5, "finalized once the server exited, not at the grace's end"
    last = [c.object for c in fake.store.changes_since(since) or []
            if c.resource == pods and c.object["metadata"]["name"] == pod and c.type == "MODIFIED"][-1]
    term = last["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (0, "Completed"), "SIGTERM handled: a clean exit, no SIGKILL"
    assert last["status"]["phase"] == "Succeeded"
    assert not processes_mentioning(f"--host {address[0]} ")
    wait_for(lambda: len(cluster.ready_pods()) == 1 and pod not in cluster.ready_pods(), 10, "a replacement")


def test_exec_streams_output_and_reports_the_exit_code(make) -> None:
    fake, cluster = make(share=True)
    pod = only_pod(cluster)
    out, err, status = exec_(fake, pod, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (out, err) == ("out\n", "err\n")
    assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    assert exec_(fake, pod, ["true"])[2] == {"metadata": {}, "status": "Success"}


def test_intercepted_commands_are_answered_by_the_test_and_the_rest_run(make) -> None:
    fake, cluster = make(share=True)
    pod = only_pod(cluster)
    remove = cluster.kubelet.intercept(lambda e: "inferchaos.faults.gpu_hog" in " ".join(e.argv), lambda e: ("4242\n", "", 0))
    assert exec_(fake, pod, ["sh", "-c", "nohup python -m inferchaos.faults.gpu_hog --cuda >/tmp/hog 2>&1 & echo $!"])[0] == "4242\n"
    assert exec_(fake, pod, ["sh", "-c", "echo $$"])[0].strip() != "4242"
    remove()
    assert [e.argv[0] for e in fake.execs] == ["sh", "sh"]


def test_exec_into_a_container_the_kubelet_does_not_run_is_refused(make) -> None:
    """As the kubelet answers (HTTP 500 before the upgrade: the client's handshake fails);
    here the pod is bound to a node this kubelet does not serve."""
    fake, cluster = make(share=True)
    fake.add("", "v1", "pods", {"metadata": {"name": "elsewhere", "namespace": NS},
                                "spec": {"nodeName": "node-z", "containers": [{"name": "server"}]}}, NS)
    with pytest.raises(client.ApiException) as refused:
        exec_(fake, "elsewhere", ["true"])
    assert "Handshake status 500" in str(refused.value.reason)
    assert 'container not found (\\"server\\")' in str(refused.value.reason)


def test_a_pod_removed_outright_keeps_running_until_the_kubelet_notices(make) -> None:
    fake, cluster = make(share=False)
    pod = only_pod(cluster)
    ip = cluster.kubelet.ip(NS, pod)
    fake.store.delete(fake.store.resource("", "v1", "pods"), NS, pod)  # grace 0, force
    wait_for(lambda: not processes_mentioning(f"--host {ip} "), 5, "its server stopped by the kubelet")
    wait_for(lambda: len(cluster.ready_pods()) == 1, 10, "a replacement pod Ready")


@pytest.mark.parametrize("share", [True, False])
def test_stop_leaves_no_process_behind(share: bool) -> None:
    with FakeKube() as fake, FakeCluster(fake, namespace=NS, replicas=2, share_process_namespace=share) as cluster:
        pods = cluster.ready_pods()
        assert len(pods) == 2
        for pod in pods:  # something exec'd and left running in the container, too
            exec_(fake, pod, ["sh", "-c", "nohup sleep 297 >/dev/null 2>&1 &"])
        assert processes_mentioning("sleep 297")
    assert processes_mentioning("container_server.py") == []
    assert processes_mentioning("sleep 297") == []
    assert processes_mentioning("signal.pause()") == []


KEEPER = """
import sys, time
from tests.fakekube import FakeKube
from tests.fakekube.cluster import FakeCluster
fake = FakeKube().start()
cluster = FakeCluster(fake, namespace="ml", replicas=2, share_process_namespace=sys.argv[1] == "1").seed().start()
print(cluster.kubelet.log_dir, *(cluster.kubelet.ip("ml", p) for p in cluster.ready_pods()), flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("share", [True, False])
def test_a_killed_test_process_takes_its_containers_along(share: bool) -> None:
    """PR_SET_PDEATHSIG on the shims and the containers: no stop() runs, nothing survives."""
    proc = subprocess.Popen([sys.executable, "-c", KEEPER, "1" if share else "0"], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    try:
        log_dir, *ips = proc.stdout.readline().split()  # type: ignore[union-attr]
        assert len(ips) == 2 and all(processes_mentioning(f"--host {ip} ") for ip in ips)
    finally:
        proc.kill()
        proc.wait(10)
    shutil.rmtree(log_dir, ignore_errors=True)  # the one thing a killed kubelet leaves
    for ip in ips:
        wait_for(lambda: not processes_mentioning(f"--host {ip} "), 5, f"the server on {ip} gone")


def test_a_background_child_holding_the_streams_keeps_the_exec_open_and_pause_reaps_it(make) -> None:
    """As containerd: the exec ends when its streams drain, not when its shell exits; the
    orphan it leaves is reaped by the pause process (PID 1), so no zombie stays."""
    fake, cluster = make(share=True)
    pod = only_pod(cluster)
    t0 = time.monotonic()
    assert exec_(fake, pod, ["sh", "-c", "sleep 2 >/dev/null 2>&1 </dev/null & echo started"])[0] == "started\n"
    assert time.monotonic() - t0 < 1.5, "redirected: the exec ends at once"
    t0 = time.monotonic()
    assert exec_(fake, pod, ["sh", "-c", "sleep 2 & echo started"])[0] == "started\n"
    assert time.monotonic() - t0 >= 1.9, "the background sleep held stdout"
    time.sleep(0.3)  # both sleeps have ended, as orphans of PID 1
    listing, _, _ = exec_(fake, pod, ["sh", "-c", "cat /proc/[0-9]*/stat"])
    states = [line.rsplit(")", 1)[1].split()[0] for line in listing.splitlines()]
    assert "Z" not in states, listing
