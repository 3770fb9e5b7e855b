"""The fake API server as a platform team meets it: the real kubectl (the one on PATH; the
tier is skipped where there is none), each test one row of docs/kubernetes.md's table of
what the fake does against what Kubernetes does, expecting Kubernetes' answer.

Most rows run against the fake over plain HTTP without an authorizer (kubectl anonymous);
the RBAC rows over HTTPS with the runner's ServiceAccount token and deploy/'s Roles enforced,
since client-go sends a bearer token only over TLS. The fake serves no OpenAPI documents (a
row it does not pass yet), so writes go with --validate=false.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.fakekube import FakeKube
from tests.support.kubeseed import RUNNER_TOKEN, runner_policy

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="no kubectl on PATH")
NS = "ml"


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeKube]:
    with FakeKube() as server:
        server.add("", "v1", "namespaces", {"metadata": {"name": NS}})
        config = tmp_path / "kubeconfig"
        config.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: "{server.url}"}}}}]
users: [{{name: anonymous, user: {{}}}}]
contexts: [{{name: fake, context: {{cluster: fake, user: anonymous, namespace: {NS}}}}}]
current-context: fake
""")
        server.kubeconfig = config  # type: ignore[attr-defined]
        yield server


def kubectl(fake: FakeKube, *args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([KUBECTL, "--kubeconfig", str(fake.kubeconfig), *args],  # type: ignore[attr-defined, list-item]
                          input=stdin, capture_output=True, text=True, timeout=timeout)


def pod(name: str, labels: dict[str, str], node: str = "node-a", ready: bool = True) -> dict:
    return {"metadata": {"name": name, "namespace": NS, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "server", "image": "ref:1"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_a_label_selector_watch_shows_a_pod_relabelled_out_as_deleted(fake: FakeKube) -> None:
    fake.add("", "v1", "pods", pod("web-0", {"app": "web"}), NS)
    proc = subprocess.Popen([KUBECTL, "--kubeconfig", str(fake.kubeconfig), "get", "pods", "-l", "app=web",  # type: ignore[attr-defined, list-item]
                             "--watch", "--output-watch-events", "--no-headers"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 15
        while not lines and time.monotonic() < deadline:
            time.sleep(0.1)
        relabel = kubectl(fake, "label", "pod", "web-0", "app=quarantine", "--overwrite")
        assert relabel.returncode == 0, relabel.stderr
        while "DELETED" not in "".join(lines) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(10)
    assert [ln.split()[:2] for ln in lines] == [["ADDED", "web-0"], ["DELETED", "web-0"]], lines


def test_a_configmap_with_a_finalizer_terminates_until_it_is_removed(fake: FakeKube) -> None:
    made = kubectl(fake, "create", "-f", "-", "--validate=false", stdin='{"apiVersion": "v1", "kind": "ConfigMap", "metadata": '
                                                     '{"name": "held", "finalizers": ["example.com/hold"]}}')
    assert made.returncode == 0, made.stderr
    deleted = kubectl(fake, "delete", "configmap", "held", "--wait=false")
    assert deleted.returncode == 0 and 'configmap "held" deleted' in deleted.stdout, deleted
    still = kubectl(fake, "get", "configmap", "held", "-o", "jsonpath={.metadata.deletionTimestamp}")
    assert still.returncode == 0 and still.stdout.strip(), still
    waited = kubectl(fake, "delete", "configmap", "held", "--timeout=2s")
    assert waited.returncode != 0 and "timed out waiting" in waited.stderr, waited
    freed = kubectl(fake, "patch", "configmap", "held", "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
    assert freed.returncode == 0, freed.stderr
    gone = kubectl(fake, "get", "configmap", "held")
    assert gone.returncode != 0 and 'configmaps "held" not found' in gone.stderr, gone


def test_drain_is_refused_by_a_budget_at_its_minimum_and_retried(fake: FakeKube) -> None:
    fake.add("", "v1", "nodes", {"metadata": {"name": "node-a"}, "spec": {},
                                 "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    for name in ("web-0", "web-1"):
        fake.add("", "v1", "pods", pod(name, {"app": "web"}), NS)
    fake.add("policy", "v1", "poddisruptionbudgets", {"metadata": {"name": "web", "namespace": NS},
                                                      "spec": {"minAvailable": 2,
                                                               "selector": {"matchLabels": {"app": "web"}}}}, NS)
    drained = kubectl(fake, "drain", "node-a", "--timeout=7s", "--force", timeout=60)
    out = drained.stdout + drained.stderr
    assert drained.returncode != 0, out
    assert "Cannot evict pod as it would violate the pod's disruption budget." in out, out
    assert "will retry after 5s" in out, out
    assert fake.exists("", "v1", "pods", "web-0", NS) and fake.exists("", "v1", "pods", "web-1", NS)
    assert fake.get("", "v1", "nodes", "node-a")["spec"].get("unschedulable") is True, "drain cordons first"


def test_a_server_side_dry_run_persists_nothing(fake: FakeKube) -> None:
    body = '{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"}, ' \
           '"spec": {"containers": [{"name": "c", "image": "busybox"}]}}'
    tried = kubectl(fake, "create", "-f", "-", "--validate=false", "--dry-run=server", "-o", "name", stdin=body)
    assert tried.returncode == 0 and tried.stdout.strip() == "pod/probe", tried
    labelled = kubectl(fake, "label", "namespace", NS, "team=ml", "--dry-run=server")
    assert labelled.returncode == 0, labelled.stderr
    assert kubectl(fake, "get", "pod", "probe").returncode != 0
    assert "team" not in (fake.get("", "v1", "namespaces", NS)["metadata"].get("labels") or {})


@pytest.mark.parametrize("body, words", [
    ('{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "Bad_Name"}, '
     '"spec": {"containers": [{"name": "c", "image": "i"}]}}', 'Pod "Bad_Name" is invalid: metadata.name: Invalid value'),
    ('{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "empty"}, "spec": {"containers": []}}',
     'Pod "empty" is invalid: spec.containers: Required value'),
    ('{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "nowhere"}, '
     '"spec": {"containers": [{"name": "c", "image": "i"}]}}', 'namespaces "nowhere" not found'),
])
def test_what_the_api_server_refuses_on_create_is_refused(fake: FakeKube, body: str, words: str) -> None:
    refused = kubectl(fake, "create", "-f", "-", "--validate=false", stdin=body)
    assert refused.returncode != 0 and words in refused.stderr, refused


def test_pod_security_restricted_refuses_a_pod_that_breaks_it(fake: FakeKube) -> None:
    """The words as Kubernetes' own examples of the admission show them (runAsUser=0, a
    privileged container, an added capability), and a pod that meets the level admitted."""
    labelled = kubectl(fake, "label", "namespace", NS, "pod-security.kubernetes.io/enforce=restricted")
    assert labelled.returncode == 0, labelled.stderr
    bad = ('{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "root"}, "spec": {"securityContext": '
           '{"runAsUser": 0, "runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}}, "containers": '
           '[{"name": "app", "image": "i", "securityContext": {"privileged": true, "allowPrivilegeEscalation": false, '
           '"capabilities": {"drop": ["ALL"], "add": ["NET_RAW"]}}}]}}')
    refused = kubectl(fake, "create", "-f", "-", "--validate=false", stdin=bad)
    assert refused.returncode != 0, refused
    assert refused.stderr.strip().endswith(
        'pods "root" is forbidden: violates PodSecurity "restricted:latest": privileged (container "app" must not set '
        'securityContext.privileged=true), unrestricted capabilities (container "app" must not include "NET_RAW" in '
        'securityContext.capabilities.add), runAsUser=0 (pod must not set runAsUser=0)'), refused.stderr
    good = ('{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ok"}, "spec": {"securityContext": '
            '{"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}}, "containers": [{"name": "app", '
            '"image": "i", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}}')
    admitted = kubectl(fake, "create", "-f", "-", "--validate=false", stdin=good)
    assert admitted.returncode == 0 and "pod/ok created" in admitted.stdout, admitted


def secured(tmp_path: Path, token: str, tls: bool = True) -> tuple[FakeKube, Path]:
    server = FakeKube(tls=tls, **runner_policy(NS)).start()
    server.add("", "v1", "namespaces", {"metadata": {"name": NS}})
    server.add("apps", "v1", "deployments", {"metadata": {"name": "ref", "namespace": NS}, "spec": {
        "replicas": 1, "selector": {"matchLabels": {"app": "ref"}},
        "template": {"metadata": {"labels": {"app": "ref"}}, "spec": {"containers": [{"name": "s", "image": "i"}]}}}}, NS)
    ca = f"certificate-authority: {server.ca_path}" if tls else ""
    config = tmp_path / "kubeconfig"
    config.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: "{server.url}", {ca}}}}}]
users: [{{name: runner, user: {{token: {token}}}}}]
contexts: [{{name: fake, context: {{cluster: fake, user: runner, namespace: {NS}}}}}]
current-context: fake
""")
    server.kubeconfig = config  # type: ignore[attr-defined]
    return server, config


def test_over_https_the_runner_token_meets_deploys_rbac_in_the_authorizers_words(tmp_path: Path) -> None:
    server, _ = secured(tmp_path, RUNNER_TOKEN)
    try:
        listed = kubectl(server, "get", "deployments", "-o", "name")
        assert listed.returncode == 0 and listed.stdout.split() == ["deployment.apps/ref"], listed
        denied = kubectl(server, "delete", "deployment", "ref")
        assert denied.returncode != 0 and denied.stderr.strip() == (
            'Error from server (Forbidden): deployments.apps "ref" is forbidden: User '
            '"system:serviceaccount:inferchaos:inferchaos-runner" cannot delete resource "deployments" in API group '
            '"apps" in the namespace "ml"'), denied.stderr
        assert server.exists("apps", "v1", "deployments", "ref", NS)
    finally:
        server.stop()


def test_a_bearer_token_is_not_sent_over_plain_http_so_the_api_answers_401(tmp_path: Path) -> None:
    server, _ = secured(tmp_path, RUNNER_TOKEN, tls=False)
    try:
        refused = kubectl(server, "get", "deployments")
        assert refused.returncode != 0 and "error: You must be logged in to the server (the server has asked for " \
            "the client to provide credentials)" in refused.stderr, refused
        assert server.requests() and server.authorizations == [], "every request arrived without the token: 401"
    finally:
        server.stop()
