"""The fake Kubernetes the project's own `--target kubernetes` runs go against, staged once
for the tests (tests/kube/test_kubernetes_target.py) and the API-load benchmark
(bench/kube_api_rate.py): deploy/'s RBAC enforced for the runner's ServiceAccount, a
Deployment's pods as real processes under the fake kubelet, EndpointSlices kept by a
controller, Chaos Mesh answering NetworkChaos, the Service under load (`ref`, a
LoadBalancer) and a model store beside it; and the options a run against it takes.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from inferchaos.targets.local import LocalCluster
from inferchaos.targets.local.vgpu import VirtualDevice
from tests.fakekube import FakeKube
from tests.fakekube.chaosmesh import ChaosMeshController
from tests.fakekube.cluster import FakeCluster
from tests.fakekube.endpointslices import EndpointSliceController
from tests.fakekube.execs import Exec, Run
from tests.fakekube.rbac import Policy, service_account
from tests.support.phases import slo_set

REPO = Path(__file__).resolve().parents[2]
NS, CONTEXT = "ml", "fake-staging"
SHORT = slo_set()
RUNNER = service_account("inferchaos", "inferchaos-runner")
RBAC = [REPO / "deploy" / "base" / "rbac.yaml", REPO / "deploy" / "components" / "spot-faults" / "node-access.yaml"]


@contextmanager
def staged_kube(tmp_path: Path, server_args: tuple[str, ...] = ()) -> Iterator[FakeKube]:
    """The namespace the project's own Kubernetes runs go against (see the module's docstring);
    `server_args`: the pods' server's options (container_server.py's)."""
    policy = Policy.from_manifests(RBAC, namespace_override=NS)
    with FakeKube(policy=policy, tokens={"runner-token": RUNNER}) as fake:
        cluster = FakeCluster(fake, namespace=NS, server_args=server_args).seed()
        uid = fake.add("", "v1", "namespaces", {"metadata": {"name": "kube-system"}})["metadata"]["uid"]

        def opt_in(ns: dict) -> dict:
            ns["metadata"]["labels"] = {"inferchaos.io/allow-chaos": "true"}
            return ns
        fake.store.update(fake.store.resource("", "v1", "namespaces"), "", NS, opt_in)
        # the Service under load; the endpoint is a local cluster reached as through a
        # port-forward, so the runs name it (--service ref)
        fake.add("", "v1", "services", {"metadata": {"name": "ref", "namespace": NS},
                                        "spec": {"selector": {"app": "ref"},
                                                 "ports": [{"name": "http", "port": 8000,
                                                            "targetPort": cluster.serving_port}],
                                                 "type": "LoadBalancer", "clusterIP": "10.96.0.10",
                                                 "clusterIPs": ["10.96.0.10"]},
                                        "status": {"loadBalancer": {"ingress": [{"hostname": "ref.lb.example"}]}}},
                 NS)
        fake.add("", "v1", "services", {"metadata": {"name": "model-store", "namespace": NS},
                                        "spec": {"selector": {"app": "model-store"}, "ports": [{"port": 8001}]}}, NS)
        fake.add("", "v1", "pods", {"metadata": {"name": "model-store-0", "namespace": NS,
                                                 "labels": {"app": "model-store"}},
                                    "spec": {"nodeName": "node-a", "containers": [{"name": "store", "image": "s:1"}]},
                                    "status": {"phase": "Running", "podIP": "10.0.1.1"}}, NS)
        vgpu = tmp_path / "vgpu"
        VirtualDevice.create(vgpu, 0, 8 * 2**30)

        def hog_on_a_virtual_device(e: Exec) -> Run:
            """No GPU here: the hog exec'd into the pod runs for real, in the pod's namespaces,
            on the virtual device ledger instead of CUDA (the one boundary that cannot run here)."""
            script = e.argv[2].replace("--cuda", f"--vgpu-dir {vgpu}").replace("python -m", f"{sys.executable} -m")
            pid = cluster.kubelet.host_pid(e.namespace, e.pod, e.container)
            return Run(("env", f"PYTHONPATH={REPO}", "nsenter", "-t", str(pid), "-p", "-m", "--", "sh", "-c", script),
                       30.0)

        cluster.kubelet.intercept(lambda e: e.argv[:2] == ("sh", "-c") and "inferchaos.faults.gpu_hog --cuda" in e.argv[2],
                                  hog_on_a_virtual_device)
        with cluster.start(), ChaosMeshController(fake) as chaos, \
                EndpointSliceController(fake, NS, "ref", {"app": "ref"}, port=cluster.serving_port, port_name="http"):
            kubeconfig = tmp_path / "kubeconfig"
            kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: "{fake.url}"}}}}]
users: [{{name: runner, user: {{token: runner-token}}}}]
contexts: [{{name: {CONTEXT}, context: {{cluster: fake, user: runner}}}}, {{name: prod, context: {{cluster: fake, user: runner}}}}]
current-context: {CONTEXT}
""")
            fake.kubeconfig = kubeconfig  # type: ignore[attr-defined]
            fake.cluster = cluster  # type: ignore[attr-defined]
            fake.uid = uid  # type: ignore[attr-defined]
            fake.chaos = chaos  # type: ignore[attr-defined]
            yield fake


def kube_args(fake: FakeKube, endpoint: LocalCluster, tmp: Path, shared_nodes: bool = True, **over: str) -> list[str]:
    """The model store's pod shares node-a with a replica: spot runs allow it unless told not to."""
    opts = {"--target": "kubernetes", "--kubeconfig": str(fake.kubeconfig),  # type: ignore[attr-defined]
            "--allow-cluster": fake.uid,  # type: ignore[attr-defined]
            "--namespace": NS, "--allow-namespace": NS, "--selector": "app=ref", "--endpoint": endpoint.lb_url,
            "--ledger": str(tmp / "ledger.jsonl"), "--chaos-report": str(tmp / "report"),
            "--pipeline-deployment": "feature-pipeline", "--dependency": "model_store=model-store.ml.svc",
            "--server-process": "container_server.py", "--service": "ref"}
    opts.update(over)
    argv = [a for k, v in opts.items() if v is not None for a in (k, v)]
    # a spot notice of 2 s, not the Kubernetes default of 30 s (a cloud's): the fake's nodes need no more
    return argv + (["--allow-shared-nodes"] if shared_nodes else []) + [
        "--dependency", "feature_store=feature-store.ml.svc", "--fault-set", "spot_reclamation.notice_s=2", *SHORT]



