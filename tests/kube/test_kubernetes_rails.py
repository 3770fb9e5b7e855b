"""The rails on Kubernetes, each against a fake API server that answers like a real one.

Every test here failed on the code before the rails: a context name that pinned nothing,
a node whose every replica the spot fault took, a cordon that hit other tenants, a radius
counted over pods that were not serving, a taint edit that dropped other taints' timeAdded
and overwrote a concurrent writer, changes that never expired.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from inferchaos.faults.catalogue import lookup
from inferchaos.faults.ledger import Ledger
from inferchaos.ground.errors import UsageError
from inferchaos.targets.kubernetes import Connection, nodes
from inferchaos.targets.kubernetes.sweep import sweep
from tests.fakekube import FakeKube
from tests.support.kubeseed import CONTEXT, NS, kubeconfig, pod, seed, target

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake():
    with FakeKube() as server:
        yield server


def fault(name: str, t, tmp: Path, **params):
    return lookup(name).on(t, ledger=Ledger(tmp / "ledger.jsonl"), **params)


# ----------------------------------------------------------------------------- identity
def test_a_cluster_of_another_identity_is_refused_after_the_identity_read_alone(fake, tmp_path):
    seed(fake, {"node-a": ["ref-1"], "node-b": ["ref-2"]})
    fake.clear_requests()
    t = target(fake, tmp_path, "0c9d-the-uid-of-staging")  # same context name, another cluster
    with pytest.raises(UsageError, match="is not on the allowlist") as info:
        t.start()
    assert "--allow-cluster" in str(info.value)
    asked = [(r.method, r.path) for r in fake.requests() if not r.path.startswith(("/version", "/api/", "/apis/"))
             or r.path.startswith("/api/v1/")]
    assert asked == [("GET", "/api/v1/namespaces/kube-system")], asked


def test_plan_on_a_cluster_of_another_identity_is_refused_by_the_cli(fake, tmp_path):
    seed(fake, {"node-a": ["ref-1"], "node-b": ["ref-2"]})
    fake.clear_requests()
    proc = subprocess.run([sys.executable, "-m", "inferchaos.cli", "plan", "replica_crash", "--target", "kubernetes",
                           "--kubeconfig", str(kubeconfig(fake, tmp_path)), "--allow-cluster", "another-uid",
                           "--namespace", NS, "--allow-namespace", NS, "--selector", "app=ref"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 2 and "is not on the allowlist" in proc.stderr, proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert [r.path for r in fake.requests() if r.path.startswith("/api/v1/")] == ["/api/v1/namespaces/kube-system"]


def test_a_namespace_that_did_not_opt_in_is_refused(fake, tmp_path):
    uid = seed(fake, {"node-a": ["ref-1"], "node-b": ["ref-2"]}, opted_in=False)
    with pytest.raises(UsageError, match="has not opted in.*inferchaos.io/allow-chaos=true"):
        target(fake, tmp_path, uid).start()


def test_an_undo_step_replayed_against_another_cluster_is_refused(fake, tmp_path):
    uid = seed(fake, {"node-a": ["ref-1"], "node-b": ["ref-2"]})
    conn = Connection(str(kubeconfig(fake, tmp_path)), CONTEXT, "the-uid-the-change-was-made-on")
    with pytest.raises(UsageError, match="not the-uid-the-change-was-made-on"):
        conn.pinned()
    Connection(conn.kubeconfig, CONTEXT, uid).pinned().close()


# ----------------------------------------------------------------------------- blast radius
def test_a_radius_is_never_taken_from_the_last_ready_pods(fake, tmp_path):
    uid = seed(fake, {"node-a": ["ref-1"], "node-b": ["ref-2"], "node-c": ["ref-3"]}, not_ready={"ref-1", "ref-2"})
    with target(fake, tmp_path, uid) as t:
        crash = fault("replica_crash", t, tmp_path, replicas="1")
        with pytest.raises(UsageError, match="would leave none serving"):
            crash.plan()


def test_spot_on_a_node_holding_every_replica_is_refused_with_the_node_map(fake, tmp_path):
    uid = seed(fake, {"node-a": ["ref-1", "ref-2", "ref-3"]})
    with target(fake, tmp_path, uid) as t:
        spot = fault("spot_reclamation", t, tmp_path, replicas="1", notice_s=1)
        with pytest.raises(UsageError, match=r"no node's inference pods fit the blast radius 1") as info:
            spot.plan()
        assert "node-a: ref-1, ref-2, ref-3" in str(info.value)


def test_spot_picks_a_node_whose_pods_fit_and_names_the_other_tenants(fake, tmp_path):
    uid = seed(fake, {"node-a": ["ref-1", "ref-2"], "node-b": ["ref-3"], "node-c": ["ref-4"]},
               others={"node-b": ["team-b/etl-0"]})
    for node in ("node-a", "node-b", "node-c"):  # node agents run everywhere and tolerate a cordon
        agent = pod(f"dcgm-{node}", node, labels={"app": "dcgm"}, ns="team-b")
        agent["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "dcgm",
                                                 "uid": "d1", "controller": True}]
        fake.add("", "v1", "pods", agent, "team-b")
    with target(fake, tmp_path, uid) as t:
        plan = fault("spot_reclamation", t, tmp_path, replicas="1", notice_s=1).plan()
        assert "cordon node node-c" in plan[0] and "evict ref-4 " in plan[0], plan  # node-b has a tenant
        assert plan[1] == "other workloads on the node: none", "a DaemonSet's pod is no tenant"
    fake.store.delete(fake.store.resource("", "v1", "pods"), NS, "ref-4")
    uid_shared = uid
    with target(fake, tmp_path, uid_shared) as t:
        with pytest.raises(UsageError, match=r"node node-b also runs team-b/etl-0.*--allow-shared-nodes"):
            fault("spot_reclamation", t, tmp_path, replicas="1", notice_s=1).plan()
    with target(fake, tmp_path, uid_shared, allow_shared_nodes=True) as t:
        plan = fault("spot_reclamation", t, tmp_path, replicas="1", notice_s=1).plan()
        assert "cordon node node-b" in plan[0] and plan[1] == "other workloads on the node: team-b/etl-0"


def test_a_parameter_the_target_cannot_honour_is_refused_never_dropped(fake, tmp_path):
    uid = seed(fake, {"node-a": ["ref-1"], "node-b": ["ref-2"]})
    with target(fake, tmp_path, uid) as t:
        with pytest.raises(UsageError, match="unknown parameter 'delete_node'"):
            fault("spot_reclamation", t, tmp_path, replicas="1", notice_s=1, delete_node=True)
        with pytest.raises(UsageError, match="provisioning_delay_s applies on the local target only"):
            fault("spot_reclamation", t, tmp_path, replicas="1", provisioning_delay_s=3.0)
        with pytest.raises(UsageError, match="reset applies on the local target only"):
            fault("dependency_latency", t, tmp_path, reset=True)
        # named as local-only by the experiment: applied there, not here, and the plan is the node's
        spot = fault("spot_reclamation", t, tmp_path, replicas="1", only_on={"local": {"provisioning_delay_s": 3.0}})
        assert "provisioning_delay_s" not in spot.args and spot.args.notice_s == 30.0, "Kubernetes' own default"
        assert "cordon node" in spot.plan()[0]


# ----------------------------------------------------------------------------- chaos objects
def test_network_chaos_names_its_pods_expires_and_sends_kilobytes_as_kbps():
    from inferchaos.faults.kubernetes.network import network_chaos

    body = network_chaos("x", NS, ["ref-2", "ref-1"], "feature-store.ml.svc", 900, "run1", "2026-12-02T10:00:00Z",
                         bandwidth_kbs=100)
    spec = body["spec"]
    assert spec["selector"] == {"pods": {NS: ["ref-1", "ref-2"]}} and "labelSelectors" not in spec["selector"]
    assert spec["duration"] == "900s"
    # tc (through Chaos Mesh) reads kbps as kilobytes per second: 100 KB/s is "100kbps", not 800
    assert spec["bandwidth"]["rate"] == "100kbps"
    assert body["metadata"]["annotations"] == {"inferchaos.io/run": "run1",
                                               "inferchaos.io/expires-at": "2026-12-02T10:00:00Z"}


def test_a_bare_dependency_host_is_named_as_chaos_meshs_controller_resolves_it(fake, tmp_path):
    """Chaos Mesh resolves externalTargets in its own namespace: `feature-store` alone would
    never resolve there (and the chaos never be injected)."""
    uid = seed(fake, {"node-a": ["ref-1"], "node-b": ["ref-2"]})
    with target(fake, tmp_path, uid, dependencies={"feature_store": "feature-store",
                                                   "model_store": "store.other.svc.cluster.local"}) as t:
        latency = fault("dependency_latency", t, tmp_path)
        assert latency.host("feature_store") == f"feature-store.{NS}.svc"
        assert latency.host("model_store") == "store.other.svc.cluster.local"


# ----------------------------------------------------------------------------- node edits
def test_a_taint_edit_keeps_other_taints_and_survives_a_concurrent_writer(fake, tmp_path):
    uid = seed(fake, {"node-a": ["ref-1"]})
    node = fake.get("", "v1", "nodes", "node-a")
    node["spec"]["taints"] = [{"key": "gpu", "value": "a100", "effect": "NoSchedule",
                               "timeAdded": "2026-11-30T08:00:00Z"}]
    fake.store.replace(fake.store.resource("", "v1", "nodes"), "", "node-a", node)
    conn = Connection(str(kubeconfig(fake, tmp_path)), CONTEXT, uid)
    raced = []

    def racing_write(path: str) -> None:
        if not raced:  # between our read and our write, the autoscaler labels the node
            def label(n):
                n["metadata"].setdefault("labels", {})["autoscaler"] = "touched"
                return n
            fake.store.update(fake.store.resource("", "v1", "nodes"), "", "node-a", label)
            raced.append(path)

    original = nodes._update

    def update_with_a_race(c, name, change):
        return original(c, name, lambda n: (racing_write(name), change(n))[1])

    nodes._update, saved = update_with_a_race, nodes._update
    try:
        nodes.reclaim(conn, "node-a", "run1", time.time() + 60)
    finally:
        nodes._update = saved
    puts = [r for r in fake.requests(method="PUT") if r.path == "/api/v1/nodes/node-a"]
    assert len(puts) == 2, "the first PUT met a 409 (stale resourceVersion) and was retried on a fresh read"
    after = fake.get("", "v1", "nodes", "node-a")
    assert after["metadata"]["labels"]["autoscaler"] == "touched", "the concurrent writer's change was kept"
    taints = {t["key"]: t for t in after["spec"]["taints"]}
    assert nodes.wall(taints["gpu"]["timeAdded"]) == nodes.wall("2026-11-30T08:00:00Z"), "timeAdded kept"
    assert after["spec"]["unschedulable"] is True and "inferchaos.io/spot-reclaimed" in taints
    nodes.release(conn, "node-a", "run1")
    after = fake.get("", "v1", "nodes", "node-a")
    assert [t["key"] for t in after["spec"]["taints"]] == ["gpu"] and not after["spec"].get("unschedulable")
    assert not any(k.startswith("inferchaos.io/") for k in after["metadata"].get("annotations") or {})


def test_release_leaves_an_operators_own_cordon(fake, tmp_path):
    uid = seed(fake, {"node-a": ["ref-1"]})
    node = fake.get("", "v1", "nodes", "node-a")
    node["spec"]["unschedulable"] = True  # cordoned by a person for maintenance
    fake.store.replace(fake.store.resource("", "v1", "nodes"), "", "node-a", node)
    conn = Connection(str(kubeconfig(fake, tmp_path)), CONTEXT, uid)
    nodes.reclaim(conn, "node-a", "run1", time.time() + 60)
    nodes.release(conn, "node-a", "run1")
    assert fake.get("", "v1", "nodes", "node-a")["spec"]["unschedulable"] is True


# ----------------------------------------------------------------------------- expiry
def test_recover_expired_sweeps_what_expired_and_leaves_what_did_not(fake, tmp_path):
    uid = seed(fake, {"node-a": ["ref-1"], "node-b": ["ref-2"]})
    labels = {"app": "feature-pipeline"}
    fake.add("apps", "v1", "deployments", {
        "metadata": {"name": "feature-pipeline", "namespace": NS},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "p", "image": "p:1"}]}}}}, NS)
    conn = Connection(str(kubeconfig(fake, tmp_path)), CONTEXT, uid)
    nodes.reclaim(conn, "node-a", "lost-run", time.time() - 5)  # a runner lost; its expiry passed
    nodes.reclaim(conn, "node-b", "live-run", time.time() + 600)
    from inferchaos.targets.kubernetes import ops
    ops.annotate_deployment(conn, NS, "feature-pipeline", {"inferchaos.io/restore-replicas": "1",
                                                           "inferchaos.io/expires-at": nodes.iso(time.time() - 5),
                                                           "inferchaos.io/run": "lost-run"})
    ops.scale(conn, NS, "feature-pipeline", 0)
    fake.add("chaos-mesh.org", "v1alpha1", "networkchaos", {
        "metadata": {"name": "old", "namespace": NS, "labels": {"app.kubernetes.io/managed-by": "inferchaos"},
                     "annotations": {"inferchaos.io/expires-at": nodes.iso(time.time() - 5)}}, "spec": {}}, NS)
    fake.add("chaos-mesh.org", "v1alpha1", "networkchaos", {
        "metadata": {"name": "someone-elses", "namespace": NS,
                     "annotations": {"inferchaos.io/expires-at": nodes.iso(time.time() - 5)}}, "spec": {}}, NS)

    rec = subprocess.run([sys.executable, "-m", "inferchaos.cli", "recover", "--expired", "--ledger",
                          str(tmp_path / "none.jsonl"), "--kubeconfig", conn.kubeconfig, "--allow-cluster", uid,
                          "--namespace", NS, "--allow-namespace", NS],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert rec.returncode == 0, rec.stdout + rec.stderr
    assert "3 expired change(s) undone" in rec.stdout, rec.stdout
    a, b = fake.get("", "v1", "nodes", "node-a"), fake.get("", "v1", "nodes", "node-b")
    assert not a["spec"].get("unschedulable") and not a["spec"].get("taints")
    assert b["spec"]["unschedulable"] is True, "not expired: left to its live runner"
    assert fake.get("apps", "v1", "deployments", "feature-pipeline", NS)["spec"]["replicas"] == 1
    assert not fake.exists("chaos-mesh.org", "v1alpha1", "networkchaos", "old", NS)
    assert fake.exists("chaos-mesh.org", "v1alpha1", "networkchaos", "someone-elses", NS), "not ours"
    assert sweep(conn, NS) == [], "a second sweep finds nothing"


# ----------------------------------------------------------------------------- the server process
def test_the_server_process_defaults_to_the_containers_command(fake, tmp_path):
    uid = seed(fake, {"node-a": ["ref-1"], "node-b": ["ref-2"]})
    with target(fake, tmp_path, uid) as t:
        hang = fault("replica_hang", t, tmp_path)
        (first, *_) = sorted(t.replicas(), key=lambda p: p.name)
        assert hang.server_pattern(first) == "python -m server"

        def no_command(pod):
            del pod["spec"]["containers"][0]["command"]
            return pod
        fake.store.update(fake.store.resource("", "v1", "pods"), NS, first.name, no_command)
        with pytest.raises(UsageError, match="give --server-process"):
            hang.server_pattern(first)


def test_a_hang_refuses_a_server_that_is_pid_1_and_changes_nothing(tmp_path):
    """Without a shared process namespace the server is its container's PID 1, which ignores a
    SIGSTOP sent from inside (the kernel, in the fake kubelet's real pid namespaces)."""
    from tests.fakekube.cluster import FakeCluster
    from tests.support.kubeseed import identify_and_opt_in

    with FakeKube() as fake, FakeCluster(fake, namespace=NS, share_process_namespace=False) as cluster:
        uid = identify_and_opt_in(fake)
        with target(fake, tmp_path, uid, selector=cluster.selector, server_process="container_server.py") as t:
            hang = fault("replica_hang", t, tmp_path)
            with pytest.raises(UsageError, match="is PID 1 of its container.*shareProcessNamespace"):
                hang.inject()
            hang.revert()
        assert not [e for e in fake.execs if "kill -STOP" in " ".join(e.argv)]
        assert sorted(cluster.ready_pods()) == sorted(p["metadata"]["name"] for p in cluster.pods())
        assert Ledger(tmp_path / "ledger.jsonl").open_entries() == []
