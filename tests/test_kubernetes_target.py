"""`--target kubernetes` against a fake API server, through the real client over HTTP.

The fake (tests/fakekube) keeps a namespace that behaves: a Deployment whose pods a small
controller keeps at their count on schedulable nodes, and a "kubelet" that turns exec'd
commands into what a cluster would report (a SIGSTOPped server turns unready, a GPU hog
OOM-kills the container). The endpoint under load is a real local cluster, so locust,
probes and verdicts run as they would; the faults travel through the API, and the tests
assert the very requests a real cluster would receive, and their undo.
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

from faults.ledger import Ledger
from targets.kubernetes import KubeSettings, KubeTarget
from targets.local import ClusterSpec, LocalCluster, wait_for
from tests.fakekube import FakeKube
from tests.fakekube.cluster import FakeCluster
from tests.leftovers import processes_mentioning

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parent.parent
NS, CONTEXT = "ml", "fake-staging"
SHORT = ["--slo-set", "baseline_s=1", "--slo-set", "hold_s=3", "--slo-set", "recovery_window_s=3"]
MUTATING = ("POST", "PUT", "PATCH", "DELETE")


@pytest.fixture(scope="module")
def endpoint():
    with LocalCluster(ClusterSpec(replicas=3, provisioning_delay_s=0.5)) as c:
        yield c


@pytest.fixture
def kube(tmp_path: Path):
    with FakeKube() as fake, FakeCluster(fake, namespace=NS) as cluster:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: "{fake.url}"}}}}]
users: [{{name: chaos, user: {{token: not-a-secret}}}}]
contexts: [{{name: {CONTEXT}, context: {{cluster: fake, user: chaos}}}}, {{name: prod, context: {{cluster: fake, user: chaos}}}}]
current-context: {CONTEXT}
""")
        fake.kubeconfig = kubeconfig  # type: ignore[attr-defined]
        fake.cluster = cluster  # type: ignore[attr-defined]
        yield fake


def kube_args(fake: FakeKube, endpoint: LocalCluster, tmp: Path, **over: str) -> list[str]:
    opts = {"--target": "kubernetes", "--kubeconfig": str(fake.kubeconfig), "--allow-context": CONTEXT,  # type: ignore[attr-defined]
            "--namespace": NS, "--allow-namespace": NS, "--selector": "app=ref", "--endpoint": endpoint.lb_url,
            "--ledger": str(tmp / "ledger.jsonl"), "--chaos-report": str(tmp / "report"),
            "--pipeline-deployment": "feature-pipeline", "--dependency": "model_store=model-store.ml.svc"}
    opts.update(over)
    argv = [a for k, v in opts.items() if v is not None for a in (k, v)]
    return argv + ["--dependency", "feature_store=feature-store.ml.svc", *SHORT]


def pytest_run(paths: list[str], args: list[str], timeout: float = 400) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "KUBERNETES_SERVICE_HOST")}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "inferchaos.plugin", "-p", "no:locust",
                           "-p", "no:cacheprovider", *paths, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)


def mutations(fake: FakeKube) -> list[tuple[str, str, dict, object]]:
    return [(r.method, r.path, r.query, r.body) for r in fake.requests() if r.method in MUTATING]


def summary(tmp: Path) -> dict[str, dict]:
    return {e["id"]: e for e in json.loads((tmp / "report" / "summary.json").read_text())["experiments"]}


# ----------------------------------------------------------------------------- every experiment
def test_every_experiment_sends_its_fault_and_its_undo_through_the_api(kube, endpoint, tmp_path):
    proc = pytest_run(["experiments/"], kube_args(kube, endpoint, tmp_path))
    out = proc.stdout + proc.stderr
    runs = summary(tmp_path)
    assert set(runs) >= {"spot_reclamation", "gpu_oom[sudden]", "gpu_oom[gradual]", "model_load_stall[cold]",
                         "pipeline_lag[stop]", "pipeline_lag[slow_reads]", "dependency_latency",
                         "replica_crash", "replica_hang[tuned]", "traffic_surge"}, out[-3000:]
    assert "wrong_answers has no Kubernetes implementation" in out  # skipped, not failed
    sent = mutations(kube)
    paths = [f"{m} {p}" for m, p, _, _ in sent]

    # spot: cordon and taint the victim's node, evict with the notice as grace; then the undo, in reverse
    spot = runs["spot_reclamation"]["figures"]
    (node,) = spot["nodes"]
    node_patches = [b for m, p, _, b in sent if p == f"/api/v1/nodes/{node}"]
    assert node_patches == [{"spec": {"unschedulable": True}},
                            {"spec": {"taints": [{"key": "inferchaos.io/spot-reclaimed", "value": "true",
                                                  "effect": "NoSchedule"}]}},
                            {"spec": {"taints": []}}, {"spec": {"unschedulable": False}}], node_patches
    evictions = [(p, b) for m, p, _, b in sent if p.endswith("/eviction")]
    assert evictions and all(b["deleteOptions"]["gracePeriodSeconds"] == 2 for _, b in evictions)
    assert [p.split("/")[-2] for p, _ in evictions] == spot["evicted"]
    assert not kube.cluster.node(node)["spec"].get("unschedulable")  # type: ignore[attr-defined]

    # replica crash: one delete with grace 0
    crash = [q for m, p, q, _ in sent if m == "DELETE" and "/pods/" in p]
    assert {"gracePeriodSeconds": "0"} in crash

    # hang: SIGSTOP by exec, then SIGCONT to the same pod; the pod's readiness dropped meanwhile
    execs = [(e.pod, e.argv) for e in kube.execs]
    stops = [p for p, a in execs if a == ("kill", "-STOP", "1")]
    conts = [p for p, a in execs if a == ("kill", "-CONT", "1")]
    assert stops and stops == conts
    hang = runs["replica_hang[tuned]"]
    (f,) = hang["failover"]
    assert f["failover_s"] is not None, "the fake kubelet marked the stopped pod unready: the LB view saw it"

    # GPU OOM: the hog exec'd into the pod, killed on revert; the OOMKill read back from the API
    hogs = [a for _, a in execs if a[:2] == ("sh", "-c") and "faults.gpu_hog --cuda" in a[2]]
    assert len(hogs) == 2 and "--ramp-s 4" in hogs[1][2]
    assert sum(a == ("pkill", "-f", "faults.gpu_hog") for _, a in execs) == 2
    oom = runs["gpu_oom[sudden]"]["figures"]
    assert any(v["oom_killed"] and v["restarts"] == v["restarts_before"] + 1 for v in oom.values()), oom

    # network faults: a NetworkChaos per run, deleted on revert; pipeline scaled to 0 and back
    created = [b["metadata"]["name"] for m, p, _, b in sent if m == "POST" and p.endswith("/networkchaos")]
    deleted = [p.rsplit("/", 1)[1] for m, p, _, _ in sent if m == "DELETE" and "/networkchaos/" in p]
    assert sorted(created) == sorted(deleted) and len(created) >= 4, paths
    loss = [b for m, p, _, b in sent if m == "POST" and p.endswith("/networkchaos") and "model-load" in
            b["metadata"]["name"]]
    assert loss[0]["spec"]["action"] == "loss" and loss[0]["spec"]["externalTargets"] == ["model-store.ml.svc"]
    scales = [b for m, p, _, b in sent if p.endswith("/deployments/feature-pipeline/scale")]
    assert scales == [{"spec": {"replicas": 0}}, {"spec": {"replicas": 1}}]
    assert "Chaos Mesh NetworkChaos" in runs["dependency_latency"]["figures"]["mechanism"]
    assert "scaled Deployment feature-pipeline from 1 to 0" in runs["pipeline_lag[stop]"]["figures"]["mechanism"]

    # traffic surge is load only: nothing of it reaches the API
    assert Ledger(tmp_path / "ledger.jsonl").open_entries() == []
    assert processes_mentioning(f"--host {endpoint.lb_url}") == []


def test_a_pdb_refusal_is_reported_and_the_deadline_takes_the_pod(kube, endpoint, tmp_path):
    kube.cluster.reconcile()  # type: ignore[attr-defined]
    victim = sorted(kube.cluster.ready_pods())[0]  # type: ignore[attr-defined]
    kube.set_eviction(NS, victim, status=429, message="Cannot evict pod as it would violate the pod's disruption budget.")
    proc = pytest_run(["experiments/test_spot_reclamation.py"], kube_args(kube, endpoint, tmp_path))
    figures = summary(tmp_path)["spot_reclamation"]["figures"]
    assert victim in figures["refused_by_pdb"], proc.stdout[-3000:]
    assert "disruption budget" in figures["refused_by_pdb"][victim]
    assert victim in figures["deleted_at_deadline"], "the reclaimed instance takes the pod down anyway"
    deletes = [q for m, p, q, _ in mutations(kube) if m == "DELETE" and p.endswith(f"/pods/{victim}")]
    assert deletes == [{"gracePeriodSeconds": "0"}]


# ----------------------------------------------------------------------------- dry run
def test_dry_run_prints_the_plan_and_changes_nothing(kube, endpoint, tmp_path):
    proc = pytest_run(["experiments/"], kube_args(kube, endpoint, tmp_path) + ["--chaos-dry-run"])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "dry run, nothing changed: would cordon node node-" in out
    assert "would delete pod ref-" in out and "NetworkChaos" in out and "scale Deployment feature-pipeline" in out
    assert "not applied on Kubernetes (local cluster only): provisioning_delay_s=3.0" in out
    assert mutations(kube) == [] and kube.execs == []
    assert not (tmp_path / "ledger.jsonl").exists()


def test_inferchaos_plan_with_target_kubernetes_only_reads(kube):
    base = ["--target", "kubernetes", "--kubeconfig", str(kube.kubeconfig), "--namespace", NS,  # type: ignore[attr-defined]
            "--allow-namespace", NS, "--selector", "app=ref"]
    ok = subprocess.run([sys.executable, "-m", "inferchaos.cli", "plan", "spot_reclamation", "notice_s=30",
                         "provisioning_delay_s=60", *base, "--allow-context", CONTEXT],
                        capture_output=True, text=True, timeout=60, cwd=REPO)
    assert ok.returncode == 0, ok.stderr
    assert f"plan: spot_reclamation in context {CONTEXT}, namespace {NS}" in ok.stdout
    assert "cordon node node-" in ok.stdout and "with grace 30 s" in ok.stdout
    assert "not applied on Kubernetes (local cluster only): provisioning_delay_s=60" in ok.stdout
    refused = subprocess.run([sys.executable, "-m", "inferchaos.cli", "plan", "replica_crash", *base],
                             capture_output=True, text=True, timeout=60, cwd=REPO)
    assert refused.returncode == 2 and "is not on the allowlist" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert mutations(kube) == []


# ----------------------------------------------------------------------------- refusals
BLAST = """
from faults.replica_crash import ReplicaCrash

def test_everything(run_experiment, target):
    run_experiment(ReplicaCrash(target=target, replicas="100%"))
"""


@pytest.mark.parametrize("case, over, words", [
    ("context not allowed", {"--kube-context": "prod"}, ["'prod' is not on the allowlist", "--allow-context prod"]),
    ("kube-system", {"--namespace": "kube-system", "--allow-namespace": "kube-system"}, ["kube-system is refused"]),
    ("namespace not allowed", {"--allow-namespace": None}, ["namespace ml is not allowed", "--allow-namespace ml"]),
    ("selector matches nothing", {"--selector": "app=nothing"}, ["--selector app=nothing matches no pod"]),
    ("no endpoint", {"--endpoint": None}, ["--endpoint", "URL under test"]),
    ("blast radius", {}, ["100%", "every"]),
])
def test_refusals_are_one_line_exit_2_and_touch_nothing(kube, endpoint, tmp_path, case, over, words):
    paths = ["experiments/test_replica_crash.py"]
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


# ----------------------------------------------------------------------------- recover
def test_recover_undoes_a_cordon_left_by_a_killed_run(kube, endpoint, tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl")
    args = kube_args(kube, endpoint, tmp_path) + ["--slo-set", "hold_s=120"]
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    runner = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "inferchaos.plugin", "-p", "no:locust",
                               "-p", "no:cacheprovider", "experiments/test_spot_reclamation.py", *args],
                              cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        def cordoned() -> str | None:
            for name in kube.cluster.nodes:  # type: ignore[attr-defined]
                if kube.cluster.node(name)["spec"].get("unschedulable"):  # type: ignore[attr-defined]
                    return name
            return None

        node = wait_for(cordoned, 60, "a node cordoned by the spot reclamation")
        wait_for(lambda: any(u.op == "kube_cordon" for e in ledger.open_entries() for u in e.undo), 10,
                 "the cordon's undo journalled")
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait(10)
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
    time.sleep(0.2)
    assert kube.cluster.node(node)["spec"].get("unschedulable"), "left cordoned by the dead runner"  # type: ignore[attr-defined]

    rec = subprocess.run([sys.executable, "-m", "inferchaos.cli", "recover", "--ledger", str(tmp_path / "ledger.jsonl")],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert rec.returncode == 0, rec.stdout + rec.stderr
    assert f"node {node}: uncordoned" in rec.stdout and "taint inferchaos.io/spot-reclaimed removed" in rec.stdout
    spec = kube.cluster.node(node)["spec"]  # type: ignore[attr-defined]
    assert not spec.get("unschedulable") and not spec.get("taints")
    assert ledger.open_entries() == []
    assert processes_mentioning(f"--host {endpoint.lb_url}") == [], "the dead runner's locust ended too"


# ----------------------------------------------------------------------------- the watch
def test_the_pod_cache_relists_after_410_and_remembers_the_dead(kube, endpoint):
    settings = KubeSettings(NS, "app=ref", endpoint.lb_url, kubeconfig=str(kube.kubeconfig),  # type: ignore[attr-defined]
                            allow_contexts=(CONTEXT,), allow_namespaces=(NS,))
    with KubeTarget(settings) as target:
        target.wait_steady(10)
        assert target.unsteady() is None and target.desired_replicas() == 3
        # a change the pod watch does not see moves the resourceVersion on; then etcd "compacts":
        # the watch, reconnecting from its older version, gets 410 and must list again
        kube.add("", "v1", "configmaps", {"metadata": {"name": "unrelated", "namespace": NS}}, NS)
        kube.expire_watches()
        wait_for(lambda: target.cache.relists >= 1, 15, "a re-list after 410 Expired")
        victim = target.replicas()[0].name
        kube.store.delete(kube.store.resource("", "v1", "pods"), NS, victim)
        wait_for(lambda: any(p.name == victim and p.phase == "dead" for p in target.replica_records()), 15,
                 "the deleted pod remembered as dead")
        target.wait_steady(15)  # the controller replaced it
        assert victim not in {p.name for p in target.replicas()}
        assert {s.name: s.state for s in target.servers()}[victim] == "stopped"
