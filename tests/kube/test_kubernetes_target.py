"""`--target kubernetes` against a fake API server that says no like a real one.

The fake (tests/fakekube) enforces deploy/'s RBAC for the runner's ServiceAccount, deletes
pods gracefully, runs each pod's containers as real processes in real pid namespaces (so a
SIGSTOP, a SIGKILL and `kill -STOP 1` do what the kernel does), keeps EndpointSlices as the
EndpointSlice controller would, and answers NetworkChaos as Chaos Mesh does (admission,
selection at creation only, AllInjected). The endpoint under load is a real local cluster,
so locust, probes and verdicts run as they would; the faults travel through the API, and
the tests assert what landed, what the API received, and the undo.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from inferchaos.faults.ledger import Ledger
from inferchaos.targets.kubernetes import KubeSettings, KubeTarget
from inferchaos.targets.local import ClusterSpec, LocalCluster
from tests.support.waiting import wait_for
from inferchaos.targets.local.processes import pid_alive
from tests.fakekube import FakeKube
from tests.support.leftovers import processes_mentioning
from tests.support.inner import PYTEST
from tests.support.kubestage import CONTEXT, NS, REPO, kube_args, staged_kube

pytestmark = pytest.mark.cluster

MUTATING = ("POST", "PUT", "PATCH", "DELETE")


@pytest.fixture(scope="module")
def endpoint():
    with LocalCluster(ClusterSpec(replicas=3, provisioning_delay_s=0.5)) as c:
        yield c


@pytest.fixture
def kube(tmp_path: Path):
    with staged_kube(tmp_path) as fake:
        yield fake


def pytest_run(paths: list[str], args: list[str], timeout: float = 400) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "KUBERNETES_SERVICE_HOST")}
    return subprocess.run([*PYTEST, *paths, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)


def mutations(fake: FakeKube) -> list[tuple[str, str, dict, object]]:
    return [(r.method, r.path, r.query, r.body) for r in fake.requests() if r.method in MUTATING]


def summary(tmp: Path) -> dict[str, dict]:
    return {e["id"]: e for e in json.loads((tmp / "report" / "summary.json").read_text())["experiments"]}


# ----------------------------------------------------------------------------- every experiment
def test_every_experiment_lands_through_the_api_and_is_undone(kube, endpoint, tmp_path):
    proc = pytest_run(["experiments/"], kube_args(kube, endpoint, tmp_path))
    out = proc.stdout + proc.stderr
    runs = summary(tmp_path)
    assert set(runs) >= {"spot_reclamation", "gpu_oom[sudden]", "gpu_oom[gradual]", "model_load_stall[cold]",
                         "pipeline_lag[stop]", "pipeline_lag[slow_reads]", "dependency_latency",
                         "replica_crash", "replica_hang[tuned]", "traffic_surge"}, out[-3000:]
    assert "wrong_answers has no kubernetes executor" in out  # skipped, not failed
    assert "cuda_errors has no kubernetes executor" in out
    # every fault landed, as the cluster showed it (a fault that did not land is inconclusive)
    unlanded = {k: r.get("inconclusive") or r.get("error") for k, r in runs.items() if r["verdict"] in ("inconclusive", "error")}
    assert unlanded == {}, unlanded
    sent = mutations(kube)
    execs = [(e.pod, e.argv) for e in kube.execs]

    # spot: one read-modify-write of the node with its resourceVersion, then its release
    spot = runs["spot_reclamation"]["figures"]
    (node,) = spot["nodes"]
    puts = [b for m, p, _, b in sent if p == f"/api/v1/nodes/{node}"]
    assert [m for m, p, _, _ in sent if p == f"/api/v1/nodes/{node}"] == ["PUT", "PUT"]
    assert all(b["metadata"]["resourceVersion"] for b in puts)
    assert puts[0]["spec"]["unschedulable"] is True and puts[0]["metadata"]["annotations"]["inferchaos.io/expires-at"]
    evictions = [(p, b) for m, p, _, b in sent if p.endswith("/eviction")]
    assert evictions and all(b["deleteOptions"]["gracePeriodSeconds"] == 2 for _, b in evictions)
    assert [p.split("/")[-2] for p, _ in evictions] == spot["evicted"]
    after = kube.cluster.node(node)  # type: ignore[attr-defined]
    assert not after["spec"].get("unschedulable") and not after["spec"].get("taints")
    assert not any(k.startswith("inferchaos.io/") for k in after["metadata"].get("annotations") or {})

    # crash: the server process SIGKILLed in its container, the kubelet restarted it; no pod deleted
    crash = runs["replica_crash"]["figures"]
    ((victim, restarts),) = crash["restarts"].items()
    assert restarts["after"] == restarts["before"] + 1, crash
    assert (victim, ("sh", "-c", f"kill -KILL {crash['processes'][victim]['pid']}")) in execs
    assert not any(m == "DELETE" and p.endswith(f"/pods/{victim}") for m, p, _, _ in sent)
    landed = runs["replica_crash"]["landing"]["evidence"]
    assert f"process {crash['processes'][victim]['pid']} gone; out of the Service's slices" in landed, landed

    # hang: the server (never PID 1) stopped, read back as T, resumed by the same pid
    hang = runs["replica_hang[tuned]"]["figures"]
    ((hung, proc_),) = hang["processes"].items()
    assert proc_["pid"] != 1 and "container_server.py" in proc_["cmdline"]
    stops = [a for p, a in execs if p == hung and a[:2] == ("sh", "-c") and f"kill -STOP {proc_['pid']}" in a[2]]
    conts = [a for p, a in execs if p == hung and f"kill -CONT {proc_['pid']}" in " ".join(a) and a not in stops]
    assert stops and conts, execs
    assert "EndpointSlices of Service ref" in runs["replica_hang[tuned]"]["figures"]["lb_view"]
    (f,) = runs["replica_hang[tuned]"]["failover"]
    assert f["failover_s"] is not None, "the stopped server failed its probe; its slice endpoint went unready"
    landed = runs["replica_hang[tuned]"]["landing"]["evidence"]
    assert f"silent: {hung} at 127.100." in landed and "no answer in 2 s; while " in landed, landed

    # GPU OOM: the hog ran in the pod (on the virtual device: no GPU here) and ended on revert
    assert not [pid for pid in os.listdir("/proc") if pid.isdigit() and _cmd(pid).find("inferchaos.faults.gpu_hog") >= 0]

    # network faults: each NetworkChaos names its pods, expires, was injected, and is deleted
    created = [b for m, p, _, b in sent if m == "POST" and p.endswith("/networkchaos")]
    deleted = [p.rsplit("/", 1)[1] for m, p, _, _ in sent if m == "DELETE" and "/networkchaos/" in p]
    assert sorted(b["metadata"]["name"] for b in created) == sorted(deleted) and len(created) >= 4
    stall = [b for b in created if "model-load" in b["metadata"]["name"]]
    others = [b for b in created if b not in stall]
    assert all(set(b["spec"]["selector"]) == {"pods"} for b in created)
    assert all(b["spec"]["duration"] == "900s" for b in others), "the expiry; a stall ends by itself"
    assert stall[0]["spec"]["selector"] == {"pods": {NS: ["model-store-0"]}}, "the store side"
    # toward the crashed pod only, for the stall's 5 s: the store answers everyone else
    (killed,) = runs["model_load_stall[cold]"]["figures"]["restarts"]
    assert stall[0]["spec"]["target"] == {"mode": "all", "selector": {"pods": {NS: [killed]}}}, stall[0]["spec"]
    assert (stall[0]["spec"]["action"], stall[0]["spec"]["loss"]["loss"], stall[0]["spec"]["duration"]) == \
        ("loss", "100", "5s") and "externalTargets" not in stall[0]["spec"]
    scales = [b for m, p, _, b in sent if p.endswith("/deployments/feature-pipeline/scale")]
    assert scales == [{"spec": {"replicas": 0}}, {"spec": {"replicas": 1}}]

    # RBAC: nothing was refused, and every rule the Role grants was used by the catalogue
    denied = [a for a in kube.authorizations if not a.allowed]
    assert denied == [], denied
    used = {(a.group, a.resource, a.verb) for a in kube.authorizations}
    granted = {(g, r, v) for rule in ROLE["rules"] for g in rule["apiGroups"] for r in rule["resources"]
               for v in rule["verbs"]}
    elsewhere = {("keda.sh", "scaledobjects", "list"),  # read only where an HPA exists (test_autoscaling.py,
                 ("keda.sh", "scaledobjects", "watch"),  # test_watches.py)
                 ("", "pods", "delete"),  # the deadline's delete of a pod left on the node (the PDB test below)
                 ("", "pods", "get"),  # the container's command, without --server-process (the rails tests)
                 ("", "configmaps", "list")}  # the runs' ledgers: recover --expired, watch, the kill switch (below)
    unused = granted - used - elsewhere
    assert unused == set(), f"granted, never called: {sorted(unused)}"

    assert Ledger(tmp_path / "ledger.jsonl").open_entries() == []
    assert processes_mentioning(f"--host {endpoint.lb_url}") == []


def _cmd(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


ROLE = next(d for d in __import__("yaml").safe_load_all((REPO / "deploy" / "base" / "rbac.yaml").read_text())
            if d and d["kind"] == "Role")


def test_faults_that_do_not_land_are_inconclusive_and_undone(kube, endpoint, tmp_path):
    """Planted no-ops, each as a real cluster can produce it: the kubelet answers the SIGSTOP
    and the SIGKILL as `kill` answers them for a container's PID 1 (exit 0, nothing happens),
    and Chaos Mesh's controller is down (the NetworkChaos is accepted and never injected)."""
    kubelet = kube.cluster.kubelet  # type: ignore[attr-defined]
    kubelet.intercept(lambda e: e.argv[:2] == ("sh", "-c") and "kill -KILL" in e.argv[2], lambda e: ("", "", 0))
    kubelet.intercept(lambda e: e.argv[:2] == ("sh", "-c") and "kill -STOP" in e.argv[2], lambda e: ("", "", 0))
    kube.chaos.stop()  # type: ignore[attr-defined]
    proc = pytest_run(["experiments/test_replica_crash.py", "experiments/test_replica_hang.py::test_replica_hang[tuned]",
                       "experiments/test_dependency_latency.py"], kube_args(kube, endpoint, tmp_path))
    runs = summary(tmp_path)
    assert proc.returncode != 0, "an inconclusive run fails the gate"
    assert set(runs) == {"replica_crash", "replica_hang[tuned]", "dependency_latency"}, runs.keys()
    for name, run in runs.items():
        assert run["verdict"] == "inconclusive" and "did not land" in run["inconclusive"], (name, run)
    assert "restartCount unchanged" in runs["replica_crash"]["inconclusive"]
    assert "not stopped (T)" in runs["replica_hang[tuned]"]["inconclusive"]
    assert "not injected" in runs["dependency_latency"]["inconclusive"]
    assert Ledger(tmp_path / "ledger.jsonl").open_entries() == []
    assert not [n for n in kube.store.list(kube.store.resource("chaos-mesh.org", "v1alpha1", "networkchaos"), NS,
                                           lambda o: True)[0]], "the never-injected chaos was deleted too"


def test_a_pdb_refusal_is_reported_and_the_deadline_takes_the_pod(kube, endpoint, tmp_path):
    # a budget at its minimum: the fake's eviction subresource refuses as the API server would
    kube.add("policy", "v1", "poddisruptionbudgets", {"metadata": {"name": "ref", "namespace": NS},
                                                      "spec": {"minAvailable": 3,
                                                               "selector": {"matchLabels": {"app": "ref"}}}}, NS)
    proc = pytest_run(["experiments/test_spot_reclamation.py"], kube_args(kube, endpoint, tmp_path))
    figures = summary(tmp_path)["spot_reclamation"]["figures"]
    (victim,) = figures["refused_by_pdb"] or [None]
    assert victim, proc.stdout[-3000:]
    assert "disruption budget" in figures["refused_by_pdb"][victim]
    assert victim in figures["deleted_at_deadline"], "the reclaimed instance takes the pod down anyway"
    deletes = [q for m, p, q, _ in mutations(kube) if m == "DELETE" and p.endswith(f"/pods/{victim}")]
    assert deletes == [{"gracePeriodSeconds": "1"}], "grace 1: a grace-0 delete would leave its containers running"
    assert [a for a in kube.authorizations if not a.allowed] == []


# ----------------------------------------------------------------------------- dry run
def test_dry_run_prints_the_plan_and_changes_nothing(kube, endpoint, tmp_path):
    proc = pytest_run(["experiments/"], kube_args(kube, endpoint, tmp_path) + ["--chaos-dry-run"])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "dry run, nothing changed: would cordon node node-" in out
    assert "with grace 2 s; delete what is left at +2 s" in out  # --fault-set over the kind's 30 s
    assert "would SIGKILL the server process in pod ref-" in out and "NetworkChaos" in out
    assert "scale Deployment feature-pipeline" in out
    # the experiment names provisioning_delay_s as local-only: not applied here, and not pretended to be
    assert "provisioning_delay_s" not in out
    assert mutations(kube) == [] and kube.execs == []
    assert not (tmp_path / "ledger.jsonl").exists()


def test_inferchaos_plan_with_target_kubernetes_only_reads(kube):
    base = ["--target", "kubernetes", "--kubeconfig", str(kube.kubeconfig), "--namespace", NS,  # type: ignore[attr-defined]
            "--allow-namespace", NS, "--selector", "app=ref", "--allow-shared-nodes"]
    kube.clear_requests()
    local_only = subprocess.run([sys.executable, "-m", "inferchaos.cli", "plan", "spot_reclamation", "notice_s=30",
                                 "provisioning_delay_s=60", *base, "--allow-cluster", kube.uid],  # type: ignore[attr-defined]
                                capture_output=True, text=True, timeout=60, cwd=REPO)
    assert local_only.returncode == 2, local_only.stdout + local_only.stderr
    assert local_only.stderr.strip() == ("inferchaos: error: spot_reclamation: provisioning_delay_s applies on the "
                                         "local target only, not on kubernetes (parameters there: replicas, notice_s)")
    assert kube.requests() == [], "refused before the cluster was reached"
    ok = subprocess.run([sys.executable, "-m", "inferchaos.cli", "plan", "spot_reclamation", "notice_s=30",
                         *base, "--allow-cluster", kube.uid],  # type: ignore[attr-defined]
                        capture_output=True, text=True, timeout=60, cwd=REPO)
    assert ok.returncode == 0, ok.stderr
    assert f"plan: spot_reclamation in context {CONTEXT} (cluster {kube.uid}@{kube.url}), namespace {NS}" \
        in ok.stdout  # type: ignore[attr-defined]
    assert "cordon node node-" in ok.stdout and "with grace 30 s" in ok.stdout
    refused = subprocess.run([sys.executable, "-m", "inferchaos.cli", "plan", "replica_crash", *base],
                             capture_output=True, text=True, timeout=60, cwd=REPO)
    assert refused.returncode == 2 and "is not on the allowlist" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert mutations(kube) == []


# ----------------------------------------------------------------------------- refusals
BLAST = """
from inferchaos.faults.specs.replica_crash import replica_crash

def test_everything(run_experiment, target):
    run_experiment(replica_crash.on(target, replicas="100%"))
"""


@pytest.mark.parametrize("case, over, words", [
    ("cluster not allowed", {"--allow-cluster": "uid-of-another-cluster"}, ["is not on the allowlist",
                                                                          "--allow-cluster "]),
    ("kube-system", {"--namespace": "kube-system", "--allow-namespace": "kube-system"}, ["kube-system is refused"]),
    ("namespace not allowed", {"--allow-namespace": None}, ["namespace ml is not allowed", "--allow-namespace ml"]),
    ("selector matches nothing", {"--selector": "app=nothing"}, ["--selector app=nothing matches no pod"]),
    ("existence-only selector", {"--selector": "app"}, ["names no label value"]),
    # the model store's pod is a bare pod: no workload says how many there should be
    ("no workload", {"--selector": "app=model-store"}, ["--selector app=model-store", "no Deployment or StatefulSet"]),
    # a verdict must judge the pods the faults act on: the endpoint's Service must route to them
    ("endpoint reaches no Service", {"--service": None}, ["--endpoint", "is not a Service of ml", "--service NAME"]),
    ("Service routes to other pods", {"--service": "model-store"},
     ["Service model-store (the endpoint) routes to model-store-0", "--selector app=ref picks ref-"]),
    ("no such Service", {"--service": "nope"}, ["no Service nope in namespace ml"]),
    ("no endpoint", {"--endpoint": None}, ["--endpoint", "URL under test"]),
    ("blast radius", {}, ["100%", "every"]),
    # the serving Deployment named as the pipeline: deploy/'s role may not even read it
    ("pipeline is the fleet", {"--pipeline-deployment": "ref"}, ["Deployment ref", "403", "--pipeline-deployment"]),
])
def test_refusals_are_one_line_exit_2_and_touch_nothing(kube, endpoint, tmp_path, case, over, words):
    paths = ["experiments/test_pipeline_lag.py" if case == "pipeline is the fleet" else "experiments/test_replica_crash.py"]
    if case == "blast radius":
        (tmp_path / "test_blast.py").write_text(BLAST)
        paths = [str(tmp_path / "test_blast.py")]
    proc = pytest_run(paths, kube_args(kube, endpoint, tmp_path, **over), timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert "Traceback" not in out
    # one message (pytest repeats an exit raised mid-run in its "!!! Exit !!!" banner)
    (line,) = {x.split("inferchaos: error:", 1)[1].strip(" !") for x in out.splitlines() if "inferchaos: error:" in x}
    for word in words:
        assert word in line, line
    assert mutations(kube) == [] and kube.execs == []
    assert Ledger(tmp_path / "ledger.jsonl").open_entries() == []


def test_pipeline_lag_refuses_the_serving_deployment_whatever_the_role_allows(kube, endpoint, tmp_path):
    """Run with an admin's rights (no authorizer: RBAC would refuse first, above), naming the
    serving Deployment as the pipeline: its pods are the ones --selector picks, so scaling it
    to 0 takes the endpoint, not the features. One line, exit 2, nothing written."""
    kube.policy = None
    proc = pytest_run(["experiments/test_pipeline_lag.py"],
                      kube_args(kube, endpoint, tmp_path, **{"--pipeline-deployment": "ref"}), timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    (line,) = {x.split("inferchaos: error:", 1)[1].strip(" !") for x in out.splitlines() if "inferchaos: error:" in x}
    pods = sorted(p["metadata"]["name"] for p in kube.cluster.pods())  # type: ignore[attr-defined]
    assert "--pipeline-deployment ref selects" in line and "--selector app=ref" in line, line
    assert any(p in line for p in pods), (line, pods)
    assert mutations(kube) == [] and kube.execs == []
    assert Ledger(tmp_path / "ledger.jsonl").open_entries() == []


def test_spot_refuses_a_node_it_shares_with_another_workload(kube, endpoint, tmp_path):
    """Each replica shares its node with a pod of another team: no node is the radius's alone."""
    for i, node in enumerate(kube.cluster.nodes):  # type: ignore[attr-defined]
        kube.add("", "v1", "pods", {"metadata": {"name": f"etl-{i}", "namespace": "team-b", "labels": {"app": "etl"}},
                                    "spec": {"nodeName": node, "containers": [{"name": "etl", "image": "etl:1"}]},
                                    "status": {"phase": "Running"}}, "team-b")
    proc = pytest_run(["experiments/test_spot_reclamation.py"], kube_args(kube, endpoint, tmp_path, shared_nodes=False),
                      timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert "also runs team-b/etl-" in out and "--allow-shared-nodes" in out
    assert [(m, p) for m, p, _, _ in mutations(kube)] == []


# ----------------------------------------------------------------------------- recover
def test_recover_undoes_a_cordon_left_by_a_killed_run(kube, endpoint, tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl")
    args = kube_args(kube, endpoint, tmp_path) + ["--slo-set", "hold_s=120"]
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    runner = subprocess.Popen([*PYTEST, "experiments/test_spot_reclamation.py", *args],
                              cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        def cordoned() -> str | None:
            for name in kube.cluster.nodes:  # type: ignore[attr-defined]
                if kube.cluster.node(name)["spec"].get("unschedulable"):  # type: ignore[attr-defined]
                    return name
            return None

        node = wait_for(cordoned, 60, "a node cordoned by the spot reclamation")
        wait_for(lambda: any(u.op == "kube_node" for e in ledger.open_entries() for u in e.undo), 10,
                 "the node's undo journalled")
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait(10)
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
    time.sleep(0.2)
    assert kube.cluster.node(node)["spec"].get("unschedulable"), "left cordoned by the dead runner"  # type: ignore[attr-defined]

    # the operator's own kubeconfig: the ledger names the cluster by UID, never how to reach it
    rec = subprocess.run([sys.executable, "-m", "inferchaos.cli", "recover", "--ledger", str(tmp_path / "ledger.jsonl"),
                          "--kubeconfig", str(kube.kubeconfig)],  # type: ignore[attr-defined]
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert rec.returncode == 0, rec.stdout + rec.stderr
    assert f"node {node}: released" in rec.stdout
    spec = kube.cluster.node(node)["spec"]  # type: ignore[attr-defined]
    assert not spec.get("unschedulable") and not spec.get("taints")
    assert ledger.open_entries() == []
    assert processes_mentioning(f"--host {endpoint.lb_url}") == [], "the dead runner's locust ended too"


# ----------------------------------------------------------------------------- the endpoint
@pytest.mark.parametrize("url", ["http://ref:8000", "http://ref.ml.svc.cluster.local:8000", "http://10.96.0.10:8000",
                                 "https://ref.lb.example"])
def test_the_endpoint_is_its_service_by_dns_name_cluster_ip_or_load_balancer(kube, url):
    settings = KubeSettings(NS, "app=ref", url, kubeconfig=str(kube.kubeconfig),  # type: ignore[attr-defined]
                            allow_clusters=(kube.uid,), allow_namespaces=(NS,))  # type: ignore[attr-defined]
    with KubeTarget(settings) as target:
        target.tie()
        assert target.service == "ref"
        # the LB view is that Service's slices once read: the EndpointSlice controller's conditions
        wait_for(lambda: target.slices.service() == "ref", 10, "the Service's slices read")
        assert "Service ref" in target.lb_view()
        assert {(s.name, s.state) for s in target.servers()} == {(p.name, "running") for p in target.replicas()}


# ----------------------------------------------------------------------------- radius
@pytest.mark.parametrize("replicas, n", [("1", 1), ("50%", 2), ("100%", 3)])
def test_dependency_latency_names_only_the_pods_its_radius_allows(kube, endpoint, tmp_path, replicas, n):
    """Read back from Chaos Mesh (the fake's controller): the pods it injected, not the ones we asked for."""
    from inferchaos.faults.specs.dependency_latency import dependency_latency

    settings = KubeSettings(NS, "app=ref", endpoint.lb_url, kubeconfig=str(kube.kubeconfig),  # type: ignore[attr-defined]
                            allow_clusters=(kube.uid,), allow_namespaces=(NS,),  # type: ignore[attr-defined]
                            dependencies={"feature_store": "feature-store"})
    with KubeTarget(settings) as target:
        target.wait_steady(20)
        ready = sorted(p.name for p in target.replicas() if p.phase == "ready")
        fault = dependency_latency.on(target, ledger=Ledger(tmp_path / "ledger.jsonl"), replicas=replicas)
        fault.inject()
        try:
            wait_for(lambda: fault.landed().ok, fault.land_within_s + 5, "the chaos to land")
            assert kube.chaos.injected(NS, fault.chaos_name) == {f"{NS}/{p}" for p in ready[:n]}  # type: ignore[attr-defined]
        finally:
            fault.revert()
    assert Ledger(tmp_path / "ledger.jsonl").open_entries() == []


# ----------------------------------------------------------------------------- the watch
def test_the_pod_cache_relists_after_410_and_remembers_the_dead(kube, endpoint):
    settings = KubeSettings(NS, "app=ref", endpoint.lb_url, kubeconfig=str(kube.kubeconfig),  # type: ignore[attr-defined]
                            allow_clusters=(kube.uid,), allow_namespaces=(NS,))  # type: ignore[attr-defined]
    with KubeTarget(settings) as target:
        target.wait_steady(10)
        assert target.unsteady() is None and target.desired_replicas() == 3
        # a change the pod watch does not see moves the resourceVersion on; then etcd "compacts":
        # the watch, reconnecting from its older version, gets 410 and must list again
        kube.add("", "v1", "configmaps", {"metadata": {"name": "unrelated", "namespace": NS}}, NS)
        kube.expire_watches()
        kube.end_watches()  # as an API server restart does: the watch reconnects from its old version
        wait_for(lambda: target.cache.relists >= 1, 15, "a re-list after 410 Expired")
        victim = target.replicas()[0].name
        kube.store.delete(kube.store.resource("", "v1", "pods"), NS, victim)
        wait_for(lambda: any(p.name == victim and p.phase == "dead" for p in target.replica_records()), 15,
                 "the deleted pod remembered as dead")
        target.wait_steady(15)  # the controller replaced it
        assert victim not in {p.name for p in target.replicas()}
        assert {s.name: s.state for s in target.servers()}[victim] == "stopped"


# ----------------------------------------------------------------------------- game days
def cli_args(fake: FakeKube, ledger: Path) -> list[str]:
    return ["--target", "kubernetes", "--kubeconfig", str(fake.kubeconfig),  # type: ignore[attr-defined]
            "--allow-cluster", fake.uid, "--namespace", NS, "--allow-namespace", NS,  # type: ignore[attr-defined]
            "--selector", "app=ref", "--server-process", "container_server.py",
            "--dependency", "model_store=model-store.ml.svc", "--ledger", str(ledger)]


def server_state(fake: FakeKube, pod: str) -> str | None:
    """The state letter (/proc/PID/stat) of the server process inside the pod's container,
    found as the host sees it: a descendant of the container's init whose command names it."""
    root = fake.cluster.kubelet.host_pid(NS, pod, "server")  # type: ignore[attr-defined]
    procs = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        procs[int(pid)] = (stat[0], int(stat[1]), cmd)
    family, grew = {root}, True
    while grew:
        more = {p for p, (_, ppid, _) in procs.items() if ppid in family} - family
        family |= more
        grew = bool(more)
    return next((st for p, (st, _, cmd) in procs.items() if p in family and "container_server.py" in cmd), None)


def networkchaos(fake: FakeKube) -> list[str]:
    resource = fake.store.resource("chaos-mesh.org", "v1alpha1", "networkchaos")
    return [n["metadata"]["name"] for n in fake.store.list(resource, NS, lambda o: True)[0]]


def ledger_configmaps(fake: FakeKube) -> list[str]:
    return [c["metadata"]["name"] for c in fake.store.list(fake.store.resource("", "v1", "configmaps"), NS,
                                                             lambda o: True)[0]
            if c["metadata"]["name"].startswith("inferchaos-ledger-")]


def test_a_game_day_inject_for_reverts_itself_with_the_injector_killed(kube, tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    env = {**{k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}, "INFERCHAOS_OPERATOR": "bob@laptop"}
    proc = subprocess.Popen([sys.executable, "-m", "inferchaos.cli", "inject", "replica_hang", "--for", "5s",
                             *cli_args(kube, ledger)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, env=env)
    assert proc.stdout is not None
    out = ""
    for line in iter(proc.stdout.readline, ""):  # up to the timer's line: the fault is in, read back as T
        out += line
        if "timer pid" in line:
            break
    proc.kill()  # the operator's laptop is gone the moment the fault is in
    proc.wait(30)
    assert "injected replica_hang in context" in out and "landed: stopped (state T in /proc: " in out \
        and "; silent: " in out, \
        out + proc.stderr.read()  # type: ignore[union-attr]
    timer = int(out.split("(timer pid ")[1].split(")")[0])
    applied = next(e for e in Ledger(ledger).entries() if e.event == "applied")
    assert applied.operator == "bob@laptop" and not pid_alive(applied.runner_pid)
    entry = applied
    stops = [(e.pod, e.argv[2]) for e in kube.execs if e.argv[:2] == ("sh", "-c") and "kill -STOP" in e.argv[2]]
    ((hung, script),) = stops
    wait_for(lambda: not Ledger(ledger).open_entries(), 30, "the timer to revert the hang")
    history = [e for e in Ledger(ledger).entries() if e.id == entry.id]
    reverted = history[-1]
    assert reverted.event == "reverted" and reverted.operator == "bob@laptop"
    # the timer did it, after 5 s (the pod's own watchdog is the backstop at the 10-s expiry)
    assert reverted.runner_pid == timer and reverted.wall - history[0].wall >= 5, (reverted, history[0].wall)
    wait_for(lambda: server_state(kube, hung) in ("R", "S"), 10, "the server to run again")
    pid = script.split("kill -STOP ")[1].split()[0]
    assert any(e.pod == hung and f"kill -CONT {pid}" in " ".join(e.argv) for e in kube.execs)
    wait_for(lambda: processes_mentioning(f"revert {entry.id}") == [], 10, "the timer to exit")


def operator_env(kube) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """An operator's shell: their kubeconfig in $KUBECONFIG (a revert reaches the cluster
    through it; the ledger names the cluster by UID, never a kubeconfig)."""
    return {**{k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"},
            "KUBECONFIG": str(kube.kubeconfig)}


def test_revert_all_on_kubernetes_is_the_kill_switch_whoever_applied(kube, tmp_path):
    env = {**{k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}, "INFERCHAOS_OPERATOR": "alice@desk"}
    alice = subprocess.run([sys.executable, "-m", "inferchaos.cli", "inject", "dependency_latency",
                            "dependency=model_store", "latency_ms=200", *cli_args(kube, tmp_path / "alice.jsonl")],
                           capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert alice.returncode == 0, alice.stdout + alice.stderr
    (chaos,) = networkchaos(kube)
    # another operator, another machine, an empty ledger: the kill switch still finds it
    bob = subprocess.run([sys.executable, "-m", "inferchaos.cli", "revert", "--all",
                          *cli_args(kube, tmp_path / "bob.jsonl")], capture_output=True, text=True, timeout=120,
                         cwd=REPO)
    assert bob.returncode == 0, bob.stdout + bob.stderr
    # alice's run left its ledger in the cluster: bob's kill switch reverts from it (the sweep of
    # marks is the backstop for changes no ledger names: tests/kube/test_kubernetes_rails.py)
    assert "nothing to revert in" in bob.stdout and "(alice@desk)" in bob.stdout and chaos in bob.stdout, bob.stdout
    wait_for(lambda: networkchaos(kube) == [], 20, "the NetworkChaos to be deleted")
    assert ledger_configmaps(kube) == [], "the run's ledger is closed once its last change is reverted"
    # alice's own revert finds it gone and says so, not an error
    rev = subprocess.run([sys.executable, "-m", "inferchaos.cli", "revert", "--all", "--ledger",
                          str(tmp_path / "alice.jsonl")], capture_output=True, text=True, timeout=120, cwd=REPO,
                         env=operator_env(kube))
    assert rev.returncode == 0, rev.stdout + rev.stderr


def test_the_nightly_run_after_a_runner_killed_mid_fault_starts_by_recovering_it(kube, endpoint, tmp_path):
    """The CronJob's flow: a runner pod SIGKILLed during a hang leaves the hang applied and its
    run's ledger in the cluster; the next night's first command, on another pod with an empty
    ledger file, finds it, sees the runner's pod gone, undoes it, and the cluster is as before.
    A person's run from a laptop, not yet expired, is left alone."""
    runner = "inferchaos-nightly-29381-abcde"
    kube.add("", "v1", "pods", {"metadata": {"name": runner, "namespace": NS, "labels": {"app": "runner"}},
                                "spec": {"containers": [{"name": "chaos", "image": "inferchaos:1"}]},
                                "status": {"phase": "Running"}}, NS)
    env = {**{k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "KUBERNETES_SERVICE_HOST")},
           "INFERCHAOS_RUNNER_POD": runner, "INFERCHAOS_OPERATOR": "system:serviceaccount:ml:inferchaos-runner"}
    args = kube_args(kube, endpoint, tmp_path, **{"--ledger": str(tmp_path / "night1.jsonl")})
    night1 = subprocess.Popen([*PYTEST, "-q", "experiments/test_replica_hang.py", "-k", "tuned", *args, "--slo-set", "hold_s=120"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO, env=env,
                              start_new_session=True)
    try:
        wait_for(lambda: any("kill -STOP" in " ".join(e.argv) for e in kube.execs) and ledger_configmaps(kube),
                 120, "the runner to be holding the hang")
    finally:
        os.killpg(night1.pid, signal.SIGKILL)  # the node died under the runner
        night1.wait(30)
    ((hung, script),) = [(e.pod, e.argv[2]) for e in kube.execs if "kill -STOP" in " ".join(e.argv)]
    assert server_state(kube, hung) == "T" and len(ledger_configmaps(kube)) == 1

    # a person's run, from outside the cluster, still within its expiry
    person = subprocess.run([sys.executable, "-m", "inferchaos.cli", "inject", "dependency_latency",
                             "dependency=model_store", "latency_ms=200", *cli_args(kube, tmp_path / "laptop.jsonl")],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert person.returncode == 0, person.stdout + person.stderr
    assert len(ledger_configmaps(kube)) == 2 and len(networkchaos(kube)) == 1

    recover = [sys.executable, "-m", "inferchaos.cli", "recover", "--expired",
               *cli_args(kube, tmp_path / "night2.jsonl")[2:]]  # all but --target
    early = subprocess.run(recover, capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert early.returncode == 0 and "its runner is still running" in early.stdout, early.stdout + early.stderr
    assert server_state(kube, hung) == "T", "a runner whose pod still runs keeps its own changes"

    def fail_pod(pod: dict) -> dict:  # the Job's pod after its container was killed
        pod["status"]["phase"] = "Failed"
        return pod
    kube.store.update(kube.store.resource("", "v1", "pods"), NS, runner, fail_pod)

    night2 = subprocess.run(recover, capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert night2.returncode == 0, night2.stdout + night2.stderr
    assert f"pod {runner})" in night2.stdout and "replica_hang" in night2.stdout and "reverted" in night2.stdout
    assert "left inferchaos-ledger-" in night2.stdout and "applied from outside the cluster" in night2.stdout
    wait_for(lambda: server_state(kube, hung) in ("R", "S"), 15, "the hung server to run again")
    assert len(ledger_configmaps(kube)) == 1 and len(networkchaos(kube)) == 1  # the person's, untouched
    rev = subprocess.run([sys.executable, "-m", "inferchaos.cli", "revert", "--all", "--ledger",
                          str(tmp_path / "laptop.jsonl")], capture_output=True, text=True, timeout=120, cwd=REPO,
                         env=operator_env(kube))
    assert rev.returncode == 0, rev.stdout + rev.stderr
    wait_for(lambda: networkchaos(kube) == [], 20, "the person's NetworkChaos to go")
    assert ledger_configmaps(kube) == [] and processes_mentioning(str(tmp_path)) == []


def test_watch_on_kubernetes_shows_the_hung_pod_out_of_rotation_and_who_hung_it(kube, tmp_path):
    env = {**{k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}, "INFERCHAOS_OPERATOR": "carol@ops"}
    inject = subprocess.run([sys.executable, "-m", "inferchaos.cli", "inject", "replica_hang",
                             *cli_args(kube, tmp_path / "carol.jsonl")], capture_output=True, text=True, timeout=120,
                            cwd=REPO, env=env)
    assert inject.returncode == 0, inject.stdout + inject.stderr
    (entry,) = Ledger(tmp_path / "carol.jsonl").open_entries()
    (hung,) = {e.pod for e in kube.execs if "kill -STOP" in " ".join(e.argv)}
    seen: list[str] = []

    def reading() -> str:  # another operator's watch: an empty ledger of its own
        out = subprocess.run([sys.executable, "-m", "inferchaos.cli", "watch", "--once",
                              *cli_args(kube, tmp_path / "dave.jsonl")], capture_output=True, text=True,
                             timeout=60, cwd=REPO)
        assert out.returncode == 0, out.stdout + out.stderr
        seen.append(out.stdout)
        return out.stdout

    wait_for(lambda: f"{hung}:running" not in reading(), 30, "the EndpointSlice to take the hung pod out")
    last = seen[-1]
    assert f"faults=replica_hang:{entry.id}(carol@ops)" in last and "ready=2/3" in last, seen
    rev = subprocess.run([sys.executable, "-m", "inferchaos.cli", "revert", entry.id, "--ledger",
                          str(tmp_path / "carol.jsonl")], capture_output=True, text=True, timeout=120, cwd=REPO,
                         env=operator_env(kube))
    assert rev.returncode == 0, rev.stdout + rev.stderr
    wait_for(lambda: f"{hung}:running" in reading() and "faults=none" in seen[-1], 30, "the pod back and no fault")
