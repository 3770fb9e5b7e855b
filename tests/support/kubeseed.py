"""A namespace seeded straight into the fake API server, for tests that need pods where
they say (which node, Ready or not, other tenants beside them) rather than a controller's."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from inferchaos.targets.kubernetes import Connection, KubeSettings, KubeTarget
from tests.fakekube import FakeKube

NS, CONTEXT = "ml", "fake-staging"


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def kubeconfig(fake: FakeKube, tmp: Path, token: str = "not-a-secret") -> Path:
    path = tmp / "kubeconfig"
    path.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: "{fake.url}"}}}}]
users: [{{name: chaos, user: {{token: {token}}}}}]
contexts: [{{name: {CONTEXT}, context: {{cluster: fake, user: chaos}}}}]
current-context: {CONTEXT}
""")
    return path


def pod(name: str, node: str, ready: bool = True, labels: dict[str, str] | None = None, ns: str = NS,
        command: list[str] | None = None) -> dict[str, Any]:
    conditions = [{"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": now()}]
    return {"metadata": {"name": name, "namespace": ns, "labels": labels or {"app": "ref"}},
            "spec": {"nodeName": node, "containers": [{"name": "server", "image": "ref:1",
                                                       "command": command or ["python", "-m", "server"]}]},
            "status": {"phase": "Running", "podIP": "10.0.0.9", "conditions": conditions,
                       "containerStatuses": [{"name": "server", "ready": ready, "restartCount": 0, "image": "ref:1",
                                              "imageID": "", "state": {"running": {}}}]}}


def seed(fake: FakeKube, placement: dict[str, list[str]], others: dict[str, list[str]] | None = None,
         not_ready: set[str] = frozenset(), opted_in: bool = True) -> str:  # type: ignore[assignment]
    """placement: node -> our pods on it; others: node -> "ns/name" of other tenants there.
    Returns the cluster's identity (kube-system's uid)."""
    labels = {"inferchaos.io/allow-chaos": "true"} if opted_in else {}
    uid = fake.add("", "v1", "namespaces", {"metadata": {"name": "kube-system"}})["metadata"]["uid"]
    fake.add("", "v1", "namespaces", {"metadata": {"name": NS, "labels": labels}})
    fake.add("", "v1", "namespaces", {"metadata": {"name": "team-b"}})
    nodes = set(placement) | set(others or {})
    for node in sorted(nodes):
        fake.add("", "v1", "nodes", {"metadata": {"name": node}, "spec": {},
                                     "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    count = sum(len(p) for p in placement.values())
    fake.add("apps", "v1", "deployments", {
        "metadata": {"name": "ref", "namespace": NS},
        "spec": {"replicas": count, "selector": {"matchLabels": {"app": "ref"}},
                 "template": {"metadata": {"labels": {"app": "ref"}},
                              "spec": {"containers": [{"name": "server", "image": "ref:1"}]}}}}, NS)
    for node, names in placement.items():
        for name in names:
            fake.add("", "v1", "pods", pod(name, node, ready=name not in not_ready), NS)
    for node, refs in (others or {}).items():
        for ref in refs:
            ns, name = ref.split("/")
            fake.add("", "v1", "pods", pod(name, node, labels={"app": "other"}, ns=ns), ns)
    return uid


def target(fake: FakeKube, tmp: Path, uid: str, **over: Any) -> KubeTarget:
    settings = KubeSettings(NS, over.pop("selector", "app=ref"), "http://endpoint.invalid",
                            kubeconfig=str(kubeconfig(fake, tmp)), allow_clusters=(uid,), allow_namespaces=(NS,),
                            **over)
    return KubeTarget(settings, Connection(settings.kubeconfig, CONTEXT))


def identify_and_opt_in(fake: FakeKube, namespace: str = NS) -> str:
    """What a real cluster has and a bare fake lacks: kube-system (whose UID names the
    cluster) and the target namespace's opt-in label. Returns the UID."""
    uid = fake.add("", "v1", "namespaces", {"metadata": {"name": "kube-system"}})["metadata"]["uid"]

    def label(ns: dict[str, Any]) -> dict[str, Any]:
        ns["metadata"].setdefault("labels", {})["inferchaos.io/allow-chaos"] = "true"
        return ns

    fake.store.update(fake.store.resource("", "v1", "namespaces"), "", namespace, label)
    return uid


RUNNER_TOKEN = "runner-token"
RBAC_MANIFESTS = ("deploy/base/rbac.yaml", "deploy/components/spot-faults/node-access.yaml")


def runner_policy(namespace: str = NS) -> dict[str, Any]:
    """FakeKube kwargs enforcing deploy/'s RBAC for the runner's ServiceAccount, bound in `namespace`."""
    from tests.fakekube.rbac import Policy, service_account

    repo = Path(__file__).resolve().parents[2]
    return {"policy": Policy.from_manifests([repo / m for m in RBAC_MANIFESTS], namespace_override=namespace),
            "tokens": {RUNNER_TOKEN: service_account("inferchaos", "inferchaos-runner")}}
