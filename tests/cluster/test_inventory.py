"""`inferchaos inventory`: the local cluster's workload (real processes, real virtual GPUs),
and Kubernetes workloads through the real client against the fake API server (GETs only)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from inferchaos.cli import main
from inferchaos.ground.errors import TargetError, UsageError
from inferchaos.targets.inventory import inventory_of, shadow_line, table
from inferchaos.targets.inventory.kube import kube_inventory, model_from_args
from inferchaos.targets.inventory.local import local_inventory
from inferchaos.targets.kubernetes import Connection, KubeSettings, KubeTarget
from inferchaos.targets.local import ClusterSpec, LocalCluster
from inferchaos.targets.local.state import ClusterState, write_state
from inferchaos.targets.local.vgpu import GIB, MIB, VirtualDevice
from tests.fakekube import FakeKube
from tests.support.leftovers import assert_nothing_left
from tests.support.cli import inferchaos, one_line

CONTEXT = "fake-staging"
KSERVE = ("serving.kserve.io", "v1beta1", "inferenceservices")


@pytest.fixture(autouse=True)
def _no_env_allowlists(monkeypatch):
    for name in ("INFERCHAOS_ALLOW_CLUSTERS", "INFERCHAOS_ALLOW_NAMESPACES", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(name, raising=False)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------- local: a real cluster
@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    spec = ClusterSpec(replicas=2, warm_pool=1, provisioning_delay_s=0.5)
    state_dir = tmp_path_factory.mktemp("inv")
    with LocalCluster(spec, state_dir, owner_pid=os.getpid()) as c:
        c.wait_steady(90)
        yield c
    assert_nothing_left(state_dir)


@pytest.mark.cluster
def test_local_cluster_is_one_workload_with_its_virtual_gpus(cluster):
    (labels := cluster.state_dir / "labels.json").unlink(missing_ok=True)
    (w,) = inventory_of(cluster)
    assert (w.target, w.kind, w.model, w.model_source) == ("local", "LocalCluster", "mlp", "spec.model")
    assert (w.replicas_ready, w.replicas_desired, w.warm_pool_ready, w.warm_pool_desired) == (2, 2, 1, 1)
    assert (w.gpus_per_replica, w.gpus, w.gpu_types) == (1, 3, ("virtual",))
    replicas = {r.device: r for r in cluster.state.replicas}
    assert [d.device for d in w.devices] == sorted(replicas) and len(w.devices) == 3
    assert sorted(h for d in w.devices for h in d.holders) == sorted(
        r.name + (" (warm)" if r.slot is None else "") for r in replicas.values())
    for d in w.devices:
        holder = replicas[d.device].name + (" (warm)" if replicas[d.device].slot is None else "")
        assert d.capacity_bytes == 16 * GIB
        assert list(d.holders) == [holder] and d.holders[holder] == d.used_bytes > 0  # its weights
    # virtual GPUs are GPUs: no owner label -> shadow AI, with the hint where to put one
    assert w.shadow and w.owner == {}
    assert any(str(labels) in n for n in w.notes)
    text = table([w])
    assert "mlp" in text and "2/2" in text and "1/1" in text and "YES" in text
    assert f"device {w.devices[0].device}: 16.00 GiB" in text and replicas[w.devices[0].device].name in text


@pytest.mark.cluster
def test_local_memory_held_by_another_process_is_shown_as_its_pid(cluster):
    dev = VirtualDevice(cluster.state.vgpu_dir, cluster.replicas()[0].device)
    dev.allocate(64 * MIB, "inventory-test")
    try:
        (w,) = local_inventory(cluster)
        d = next(d for d in w.devices if d.device == dev.index)
        assert d.holders[f"pid {os.getpid()}"] == 64 * MIB
    finally:
        dev.free("inventory-test")


@pytest.mark.cluster
def test_local_owner_labels_come_from_labels_json(cluster, capsys):
    labels = cluster.state_dir / "labels.json"
    try:
        labels.write_text(json.dumps({"owner": "ml-platform", "cost-center": "42"}))
        (w,) = inventory_of(cluster)
        assert w.owner == {"owner": "ml-platform"} and not w.shadow and not w.notes
        (w,) = inventory_of(cluster, owner_keys=("cost-center",))
        assert w.owner == {"cost-center": "42"}
        code, out, _ = run(capsys, "inventory", "--state-dir", str(cluster.state_dir), "--fail-on-shadow")
        assert code == 0 and "owner=ml-platform" in out and "shadow AI: none (1 workload listed)" in out
        labels.write_text('["owner"]')
        with pytest.raises(UsageError, match="expected a JSON object of string labels"):
            inventory_of(cluster)
        code, _, err = run(capsys, "inventory", "--state-dir", str(cluster.state_dir))
        assert code == 2 and "labels.json: expected a JSON object" in one_line(err)
    finally:
        labels.unlink(missing_ok=True)


@pytest.mark.cluster
def test_inventory_verb_on_the_local_cluster(cluster, capsys):
    d = str(cluster.state_dir)
    code, out, err = run(capsys, "inventory", "--state-dir", d)
    assert code == 0 and not err
    lines = out.splitlines()
    assert lines[0] == f"inventory of the local cluster in {d} (read only)"
    assert lines[1].split() == ["NAMESPACE", "KIND", "NAME", "MODEL", "READY", "WARM", "GPU/REPLICA", "GPUS",
                                "GPU", "TYPE", "OWNER", "SHADOW", "AI"]
    assert lines[2].split()[:8] == ["-", "LocalCluster", d, "mlp", "2/2", "1/1", "1", "virtual"]
    assert lines[-1] == f"shadow AI: 1 workload asks for GPUs with no owner label (owner, team): {d}"
    code, out, _ = run(capsys, "inventory", "--state-dir", d, "--json")
    (obj,) = json.loads(out)
    assert code == 0 and obj["shadow"] is True and obj["gpus"] == 3 and len(obj["devices"]) == 3
    assert run(capsys, "inventory", "--state-dir", d, "--fail-on-shadow")[0] == 1


def test_local_custom_command_and_a_stopped_cluster_without_processes(tmp_path):
    spec = ClusterSpec(replica_cmd="vllm serve x --port {port}", replicas=4)
    write_state(ClusterState(phase="stopped", state_dir=str(tmp_path), supervisor_pid=1, supervisor_pgid=1,
                             spec=spec.to_dict(), vgpu_dir=str(tmp_path / "vgpu")))
    (w,) = inventory_of(LocalCluster.attach(tmp_path))
    assert (w.model, w.model_source) == ("custom: vllm serve x --port {port}", "replica_cmd")
    assert (w.replicas_ready, w.replicas_desired, w.devices) == (0, 4, ())
    assert "cluster phase: stopped" in w.notes


@pytest.mark.parametrize("argv, says", [
    (["--state-dir", "/nonexistent/ic"], "no local cluster in /nonexistent/ic: start one with"),
    (["--namespace", "ml"], "--namespace: only with --target kubernetes"),
    (["-A", "--kubeconfig", "k"], "--kubeconfig, --all-namespaces: only with --target kubernetes"),
    (["--owner-label", "not a key"], "--owner-label 'not a key': not a label key"),
    (["--target", "kubernetes", "--state-dir", "x"], "--state-dir: only with --target local"),
    (["--target", "kubernetes"], "which namespaces? give --namespace NS"),
    (["--target", "kubernetes", "--namespace", "Bad_NS"], "namespace 'Bad_NS' is not a valid namespace name"),
    (["--target", "kubernetes", "--namespace", "ml", "-A"], "give --namespace or --all-namespaces, not both"),
    (["--target", "kubernetes", "-A", "--kubeconfig", "/nonexistent/kubeconfig"], "no kubeconfig at /nonexistent"),
    (["--target", "cloud"], "invalid choice: 'cloud'"),
])
def test_bad_input_is_one_line_and_exit_2(argv, says, tmp_path):
    proc = inferchaos("inventory", *argv)
    assert proc.returncode == 2 and not proc.stdout
    assert says in one_line(proc.stderr)


def test_a_state_dir_that_is_a_file_is_bad_input(tmp_path, capsys):
    (f := tmp_path / "f").write_text("")
    code, _, err = run(capsys, "inventory", "--state-dir", str(f))
    assert code == 2 and "is not a directory" in one_line(err)


# ----------------------------------------------------------------------------- kubernetes: the fake API server
def node(name: str, **labels: str) -> dict:
    return {"metadata": {"name": name, "labels": labels}, "spec": {}}


def workload(kind: str, ns: str, name: str, labels: dict, containers: list, replicas: int = 1,
             annotations: dict | None = None, node_selector: dict | None = None) -> dict:
    select = {"app": name}
    return {"kind": kind, "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": select},
                     "template": {"metadata": {"labels": {**select, **labels}, "annotations": annotations or {}},
                                  "spec": {"containers": containers, "nodeSelector": node_selector or {}}}}}


def container(name: str = "server", gpus: dict | None = None, **kw: object) -> dict:
    return {"name": name, "image": "img:1", "resources": gpus or {}, **kw}


def pod(ns: str, name: str, labels: dict, node_name: str | None, ready: bool) -> dict:
    return {"metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"containers": [{"name": "server", "image": "img:1"}], "nodeName": node_name},
            "status": {"phase": "Running",
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def gpu(n: str, requests: bool = False) -> dict:
    return {"limits": {"nvidia.com/gpu": n}, **({"requests": {"nvidia.com/gpu": n}} if requests else {})}


@pytest.fixture
def kube(tmp_path: Path):
    with FakeKube() as fake:
        for ns in ("kube-system", "ml", "research", "web"):
            fake.add("", "v1", "namespaces", {"metadata": {"name": ns}})
        fake.add("", "v1", "nodes", node("gpu-a", **{"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
                                                     "node.kubernetes.io/instance-type": "p4d.24xlarge"}))
        fake.add("", "v1", "nodes", node("gpu-h", **{"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}))
        fake.add("", "v1", "nodes", node("g5", **{"node.kubernetes.io/instance-type": "g5.xlarge"}))
        vllm = container(gpus=gpu("1"), command=["python3", "-m", "vllm.entrypoints.openai.api_server"],
                         args=["--model", "meta-llama/Llama-3.1-8B-Instruct", "--port", "8000"])
        seeds = [
            ("apps", "deployments", workload("Deployment", "ml", "llama", {"owner": "ml-platform"}, [vllm], 2)),
            ("apps", "statefulsets", workload("StatefulSet", "ml", "triton", {"team": "search"},
                                              [container("a", gpu("1", True)), container("b", gpu("1", True))],
                                              annotations={"model": "resnet50"})),
            ("apps", "deployments", workload("Deployment", "ml", "feature-pipeline", {"tier": "data"}, [container()])),
            ("apps", "deployments", workload(
                "Deployment", "research", "rogue", {},
                [container(gpus=gpu("4"), command=["sh", "-c", "vllm serve mistralai/Mistral-7B-v0.1 --port 8000"])])),
            ("apps", "deployments", workload("Deployment", "research", "pending", {"app.kubernetes.io/name": "tgi"},
                                             [container(gpus=gpu("1"))],
                                             node_selector={"nvidia.com/gpu.product": "NVIDIA-L4"})),
            ("apps", "deployments", workload("Deployment", "ml", "embedder", {"model": "bge-small"}, [container()])),
            ("apps", "deployments", workload("Deployment", "web", "frontend", {"app.kubernetes.io/name": "shop"},
                                             [container()], 3)),
            ("apps", "deployments", workload("Deployment", "ml", "iris-predictor",
                                             {"serving.kserve.io/inferenceservice": "iris"},
                                             [container(gpus=gpu("1"))])),
        ]
        for group, plural, obj in seeds:
            fake.add(group, "v1", plural, obj)
        fake.add(*KSERVE, {"kind": "InferenceService", "metadata": {"name": "iris", "namespace": "ml",
                                                                    "labels": {"team": "tabular"}},
                           "spec": {"predictor": {"minReplicas": 2, "model": {
                               "modelFormat": {"name": "sklearn"}, "storageUri": "gs://models/iris",
                               "resources": {"limits": {"nvidia.com/gpu": "1"}}}}}})
        for ns, name, app, node_name, ready in (("ml", "llama-1", "llama", "gpu-a", True),
                                                ("ml", "llama-2", "llama", "gpu-a", False),
                                                ("ml", "triton-0", "triton", "gpu-h", True),
                                                ("research", "rogue-1", "rogue", "g5", True),
                                                ("web", "frontend-1", "frontend", "g5", True)):
            fake.add("", "v1", "pods", pod(ns, name, {"app": app}, node_name, ready))
        fake.add("", "v1", "pods", pod("ml", "iris-1", {"serving.kserve.io/inferenceservice": "iris"}, "gpu-h", True))
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: "{fake.url}"}}}}]
users: [{{name: u, user: {{token: not-a-secret}}}}]
contexts: [{{name: {CONTEXT}, context: {{cluster: fake, user: u}}}}]
current-context: {CONTEXT}
""")
        fake.kubeconfig = kubeconfig  # type: ignore[attr-defined]
        fake.clear_requests()
        yield fake


def only_gets(fake: FakeKube) -> list[str]:
    sent = fake.requests()
    assert sent, "nothing was asked"
    assert {r.method for r in sent} == {"GET"}, [(r.method, r.path) for r in sent if r.method != "GET"]
    return [r.path for r in sent]


def by_name(workloads) -> dict:  # type: ignore[no-untyped-def]
    return {w.ref: w for w in workloads}


def test_kubernetes_workloads_models_gpus_nodes_owners_and_shadow_ai(kube):
    api = kube.api_client()
    try:
        found = by_name(kube_inventory(api, ["ml", "research", "web"], CONTEXT))
    finally:
        api.close()
    assert sorted(found) == ["ml/embedder", "ml/iris", "ml/llama", "ml/triton", "research/pending", "research/rogue"]
    embedder = found["ml/embedder"]  # names a model, runs on CPU: listed, not shadow AI though it has no owner
    assert (embedder.model_source, embedder.gpus, embedder.owner, embedder.shadow) == ("label model", 0, {}, False)
    llama, triton, iris = found["ml/llama"], found["ml/triton"], found["ml/iris"]
    rogue, pending = found["research/rogue"], found["research/pending"]
    assert (llama.model, llama.model_source) == ("meta-llama/Llama-3.1-8B-Instruct", "args --model")
    assert (llama.replicas_ready, llama.replicas_desired) == (1, 2)  # llama-2 is not Ready
    assert (llama.gpu_requests, llama.gpu_limits, llama.gpus_per_replica, llama.gpus) == (None, 1, 1, 2)
    assert llama.gpu_types == ("NVIDIA-A100-SXM4-80GB",)  # gpu.product before the instance type
    assert llama.owner == {"owner": "ml-platform"} and not llama.shadow and llama.context == CONTEXT
    assert (triton.kind, triton.model, triton.model_source) == ("StatefulSet", "resnet50", "annotation model")
    assert (triton.gpu_requests, triton.gpu_limits, triton.gpus_per_replica) == (2, 2, 2)  # summed over containers
    assert triton.gpu_types == ("NVIDIA-H100-80GB-HBM3",) and triton.owner == {"team": "search"}
    assert (iris.kind, iris.model, iris.replicas_ready, iris.replicas_desired) == (
        "InferenceService", "gs://models/iris", 1, 2)
    assert iris.gpus == 2 and iris.owner == {"team": "tabular"} and not iris.shadow
    # asks for GPUs, no owner label: shadow AI
    assert (rogue.model, rogue.model_source) == ("mistralai/Mistral-7B-v0.1", "args vllm serve")
    assert rogue.gpus_per_replica == 4 and rogue.gpu_types == ("g5.xlarge",) and rogue.shadow
    assert (pending.model, pending.model_source) == ("tgi", "label app.kubernetes.io/name")
    assert pending.replicas_ready == 0 and pending.gpu_types == ("NVIDIA-L4",) and pending.shadow  # nodeSelector
    assert shadow_line(list(found.values())) == (
        "shadow AI: 2 workloads ask for GPUs with no owner label (owner, team): research/pending, research/rogue")
    paths = only_gets(kube)
    assert "/api/v1/namespaces/research/pods" in paths and "/api/v1/nodes" in paths


def test_owner_label_keys_are_configurable(kube):
    api = kube.api_client()
    try:
        found = by_name(kube_inventory(api, ["ml"], CONTEXT, owner_keys=("team",)))
    finally:
        api.close()
    assert found["ml/llama"].shadow and not found["ml/triton"].shadow
    only_gets(kube)


def test_unreadable_nodes_and_a_missing_kserve_are_said_not_fatal(kube):
    kube.fail_next("GET", "/api/v1/nodes", 403, "nodes is forbidden")
    kube.fail_next("GET", "/apis/serving.kserve.io/v1beta1/namespaces/ml/inferenceservices", 404)
    api = kube.api_client()
    try:
        found = by_name(kube_inventory(api, ["ml", "research"], CONTEXT))
    finally:
        api.close()
    assert "ml/iris" not in found and "ml/iris-predictor" in found  # without KServe, its Deployment is what runs
    assert found["ml/llama"].gpu_types == () and found["research/pending"].gpu_types == ("NVIDIA-L4",)
    assert any("nodes not readable (403" in n for n in found["ml/llama"].notes)
    only_gets(kube)


def test_a_refused_list_is_a_target_error(kube, capsys):
    kube.fail_next("GET", "/apis/apps/v1/namespaces/ml/deployments", 403, "deployments is forbidden")
    api = kube.api_client()
    try:
        with pytest.raises(TargetError, match="cannot list deployments in namespace ml .context fake-staging.: 403"):
            kube_inventory(api, ["ml"], CONTEXT)
    finally:
        api.close()
    kube.fail_next("GET", "/apis/apps/v1/namespaces/ml/deployments", 403, "deployments is forbidden")
    code, out, err = run(capsys, "inventory", "--target", "kubernetes", "--kubeconfig", str(kube.kubeconfig),
                         "--namespace", "ml")
    assert code == 1 and not out and "cannot list deployments" in one_line(err)


def test_inventory_of_a_kube_target_is_what_its_selector_picks(kube):
    settings = KubeSettings(namespace="ml", selector="app=llama", endpoint="http://llama.ml.svc:8000",
                            allow_clusters=("any",), allow_namespaces=("ml",))
    target = KubeTarget(settings, Connection(str(kube.kubeconfig), CONTEXT))
    try:
        (w,) = inventory_of(target)
    finally:
        target.close()
    assert (w.ref, w.model, w.gpus) == ("ml/llama", "meta-llama/Llama-3.1-8B-Instruct", 2)
    only_gets(kube)


def test_inventory_verb_on_kubernetes_table_json_and_exit_codes(kube, capsys):
    base = ["inventory", "--target", "kubernetes", "--kubeconfig", str(kube.kubeconfig)]
    code, out, err = run(capsys, *base, "--namespace", "ml", "--namespace", "research")
    assert code == 0 and not err
    lines = out.splitlines()
    assert lines[0] == (f"inventory of context {CONTEXT} (not on the chaos allowlist), namespaces ml, research "
                        "(read only: GETs)")
    rows = {line.split()[2]: line.split() for line in lines[2:] if line and not line.startswith((" ", "shadow"))}
    assert rows["rogue"] == ["research", "Deployment", "rogue", "mistralai/Mistral-7B-v0.1", "1/1", "-", "4",
                             "(lim", "4)", "4", "g5.xlarge", "-", "YES"]
    assert rows["triton"][6:9] == ["2", "(req", "2,"]
    assert rows["llama"][-2:] == ["owner=ml-platform", "-"]
    assert lines[-1].startswith("shadow AI: 2 workloads")

    uid = kube.get("", "v1", "namespaces", "kube-system")["metadata"]["uid"]
    code, out, _ = run(capsys, *base, "--allow-cluster", uid, "-A", "--json", "--fail-on-shadow")
    workloads = {f"{w['namespace']}/{w['name']}": w for w in json.loads(out)}
    assert code == 1, "shadow AI found and --fail-on-shadow"
    assert workloads["research/rogue"]["shadow"] is True and workloads["research/rogue"]["gpu_limits"] == 4
    assert workloads["ml/llama"]["owner"] == {"owner": "ml-platform"} and "web/frontend" not in workloads
    assert "/apis/apps/v1/deployments" in only_gets(kube)  # -A: one cluster-wide list

    code, out, _ = run(capsys, *base, "--allow-namespace", "ml", "--allow-cluster", uid, "--fail-on-shadow")
    assert code == 0 and f"context {CONTEXT} (cluster {uid}, on the chaos allowlist), namespace ml " in out
    assert "shadow AI: none (4 workloads listed)" in out
    code, out, _ = run(capsys, *base, "--namespace", "web")
    assert code == 0 and "no inference workload found" in out and "shadow AI: none (0 workloads listed)" in out
    only_gets(kube)


def test_an_unknown_context_is_bad_input(kube):
    proc = inferchaos("inventory", "--target", "kubernetes", "--kubeconfig", str(kube.kubeconfig),
                      "--kube-context", "prod", "-A")
    assert proc.returncode == 2 and "kube context 'prod' is not in" in one_line(proc.stderr)
    assert kube.requests() == []


@pytest.mark.parametrize("containers, expected", [
    ([{"args": ["--model=facebook/opt-125m"]}], ("facebook/opt-125m", "args --model")),
    ([{"command": ["text-generation-launcher"], "args": ["--model-id", "bigscience/bloom"]}],
     ("bigscience/bloom", "args --model-id")),
    ([{"command": ["tritonserver", "--model-repository=/models"]}], None),
    ([{"command": ["vllm", "serve", "--help"]}], None),
    ([{"args": ["sh -c 'unbalanced"]}], None),
])
def test_model_from_container_arguments(containers, expected):
    assert model_from_args(containers) == expected
