"""The fake API server, driven by the real kubernetes client over real HTTP.

These pin what the Kubernetes target relies on: if the fake drifts from how the API server
answers (codes, shapes, selectors, subresources, watch endings), these fail first.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from tests.fakekube import FakeKube, fakekube, kube_client  # noqa: F401  (fixtures)
from tests.support.waiting import wait_for

NS = "inferchaos"
WATCH_READ_TIMEOUT = (5, 8)  # a watch that never ends fails here instead of hanging the suite


@pytest.fixture(autouse=True)
def namespace(fakekube: FakeKube) -> None:  # noqa: F811
    """The namespace the tests work in exists, as on a cluster: creating in a missing one is 404."""
    for ns in (NS, "other"):
        fakekube.add("", "v1", "namespaces", {"metadata": {"name": ns}})


def pod(name: str, labels: dict[str, str] | None = None, node: str | None = None, ns: str = NS) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "server", "image": "ref:1"}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
            "spec": spec}


def deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "server", "image": "ref:1"}]}}}}


def status_of(exc: ApiException) -> dict[str, Any]:
    return json.loads(exc.body)


# --- create / get / list / delete -----------------------------------------------------------

def test_create_answers_201_with_server_fields(kube_client: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube_client)
    made, code, _ = v1.create_namespaced_pod_with_http_info(NS, pod("web-1"))  # a tuple in kubernetes 37
    assert code == 201
    assert made.metadata.namespace == NS and made.metadata.uid and made.metadata.creation_timestamp
    assert int(made.metadata.resource_version) > 0
    again = v1.read_namespaced_pod("web-1", NS)
    assert again.metadata.uid == made.metadata.uid and again.kind == "Pod" and again.api_version == "v1"


def test_create_twice_is_409_already_exists(kube_client: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube_client)
    v1.create_namespaced_pod(NS, pod("web-0"))
    with pytest.raises(ApiException) as caught:
        v1.create_namespaced_pod(NS, pod("web-0"))
    assert caught.value.status == 409
    assert status_of(caught.value)["reason"] == "AlreadyExists"
    assert status_of(caught.value)["kind"] == "Status"


def test_missing_object_is_404_status(kube_client: client.ApiClient) -> None:
    with pytest.raises(ApiException) as caught:
        client.CoreV1Api(kube_client).read_namespaced_pod("ghost", NS)
    assert caught.value.status == 404
    body = status_of(caught.value)
    assert (body["kind"], body["status"], body["reason"], body["code"]) == ("Status", "Failure", "NotFound", 404)


def test_namespaces_and_nodes_are_cluster_scoped(kube_client: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube_client)
    v1.create_namespace({"metadata": {"name": "team-c"}})
    v1.create_node({"metadata": {"name": "gpu-1", "labels": {"pool": "spot"}}})
    assert sorted(n.metadata.name for n in v1.list_namespace().items) == sorted([NS, "other", "team-c"])
    node = v1.read_node("gpu-1")
    assert node.metadata.namespace is None and node.kind == "Node"
    assert [n.metadata.name for n in v1.list_node(label_selector="pool=spot").items] == ["gpu-1"]


@pytest.mark.parametrize(("selector", "expected"), [
    ("app=web", ["web-0", "web-1"]),
    ("app==web,tier!=canary", ["web-0"]),
    ("app in (web, feed)", ["feed-0", "web-0", "web-1"]),
    ("app notin (web)", ["feed-0", "lonely"]),
    ("tier", ["web-1"]),
    ("!tier,app", ["feed-0", "web-0"]),
])
def test_label_selectors(kube_client: client.ApiClient, selector: str, expected: list[str]) -> None:
    v1 = client.CoreV1Api(kube_client)
    v1.create_namespaced_pod(NS, pod("web-0", {"app": "web"}))
    v1.create_namespaced_pod(NS, pod("web-1", {"app": "web", "tier": "canary"}))
    v1.create_namespaced_pod(NS, pod("feed-0", {"app": "feed"}))
    v1.create_namespaced_pod(NS, pod("lonely"))
    v1.create_namespaced_pod("other", pod("web-9", {"app": "web"}, ns="other"))
    listed = v1.list_namespaced_pod(NS, label_selector=selector)
    assert sorted(p.metadata.name for p in listed.items) == expected
    assert listed.kind == "PodList" and int(listed.metadata.resource_version) >= 5


def test_field_selectors(kube_client: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube_client)
    v1.create_namespaced_pod(NS, pod("a", node="gpu-1"))
    v1.create_namespaced_pod(NS, pod("b", node="gpu-2"))
    v1.create_namespaced_pod("other", pod("c", node="gpu-1", ns="other"))
    on_node = v1.list_pod_for_all_namespaces(field_selector="spec.nodeName=gpu-1")
    assert sorted(p.metadata.name for p in on_node.items) == ["a", "c"]
    mine = v1.list_pod_for_all_namespaces(field_selector=f"spec.nodeName=gpu-1,metadata.namespace={NS}")
    assert [p.metadata.name for p in mine.items] == ["a"]
    assert [p.metadata.name for p in v1.list_namespaced_pod(NS, field_selector="metadata.name!=a").items] == ["b"]


def test_delete_keeps_query_and_body_in_the_log(fakekube: FakeKube, kube_client: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube_client)
    v1.create_namespaced_pod(NS, pod("web-0"))
    v1.delete_namespaced_pod("web-0", NS, grace_period_seconds=int("7"),
                             body=client.V1DeleteOptions(grace_period_seconds=7, propagation_policy="Background"))
    [delete] = fakekube.requests(method="DELETE")
    assert delete.path == f"/api/v1/namespaces/{NS}/pods/web-0"
    assert delete.query["gracePeriodSeconds"] == "7"
    assert delete.body == {"gracePeriodSeconds": 7, "propagationPolicy": "Background"}
    assert not fakekube.exists("", "v1", "pods", "web-0", NS)
    with pytest.raises(ApiException) as caught:
        v1.delete_namespaced_pod("web-0", NS)
    assert caught.value.status == 404


def test_client_rejects_a_string_grace_period_before_sending(fakekube: FakeKube, kube_client: client.ApiClient) -> None:
    """kubernetes 37 validates arguments with pydantic: values read from YAML/env must be cast."""
    with pytest.raises(Exception) as caught:
        client.CoreV1Api(kube_client).delete_namespaced_pod("web-0", NS, grace_period_seconds="7")
    assert "grace_period_seconds" in str(caught.value)
    assert fakekube.requests(method="DELETE") == []


# --- patch / put ----------------------------------------------------------------------------

def test_cordon_and_taint_with_strategic_merge(fakekube: FakeKube, kube_client: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube_client)
    v1.create_node({"metadata": {"name": "gpu-1", "labels": {"pool": "spot"}},
                    "spec": {"taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]}})
    v1.patch_node("gpu-1", {"spec": {"unschedulable": True}})
    taints = v1.read_node("gpu-1").spec.taints or []
    notice = {"key": "inferchaos.io/spot-reclaim", "value": "notice", "effect": "NoExecute"}
    v1.patch_node("gpu-1", {"spec": {"taints": [t.to_dict(serialize=True) for t in taints] + [notice]}})
    node = v1.read_node("gpu-1")
    assert node.spec.unschedulable is True
    assert [(t.key, t.effect) for t in node.spec.taints] == [
        ("nvidia.com/gpu", "NoSchedule"), ("inferchaos.io/spot-reclaim", "NoExecute")]
    assert node.metadata.labels == {"pool": "spot"}
    patches = fakekube.requests(method="PATCH", path="/api/v1/nodes/gpu-1")
    assert [p.content_type for p in patches] == ["application/strategic-merge-patch+json"] * 2
    # untaint: taints carry no patch strategy, so the list sent replaces the old one
    v1.patch_node("gpu-1", {"spec": {"unschedulable": None, "taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]}})
    node = v1.read_node("gpu-1")
    assert not node.spec.unschedulable and [t.key for t in node.spec.taints] == ["nvidia.com/gpu"]


def test_json_patch_and_merge_patch(fakekube: FakeKube, kube_client: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube_client)
    v1.create_node({"metadata": {"name": "gpu-1", "labels": {"a": "1"}}})
    v1.patch_node("gpu-1", [{"op": "add", "path": "/spec", "value": {"unschedulable": True}},
                            {"op": "replace", "path": "/metadata/labels/a", "value": "2"}])
    v1.patch_node("gpu-1", {"metadata": {"labels": {"b": "3", "a": None}}},
                  _content_type="application/merge-patch+json")
    node = v1.read_node("gpu-1")
    assert node.spec.unschedulable is True and node.metadata.labels == {"b": "3"}
    types = [r.content_type for r in fakekube.requests(method="PATCH")]
    assert types == ["application/json-patch+json", "application/merge-patch+json"]


def test_strategic_merge_merges_containers_by_name(kube_client: client.ApiClient) -> None:
    apps = client.AppsV1Api(kube_client)
    apps.create_namespaced_deployment(NS, deployment("ref", 2))
    apps.patch_namespaced_deployment("ref", NS, {"spec": {"template": {"spec": {"containers": [
        {"name": "server", "env": [{"name": "X", "value": "1"}]}, {"name": "sidecar", "image": "s:1"}]}}}})
    containers = apps.read_namespaced_deployment("ref", NS).spec.template.spec.containers
    assert [(c.name, c.image) for c in containers] == [("server", "ref:1"), ("sidecar", "s:1")]
    assert containers[0].env[0].name == "X"


def test_failed_json_patch_test_is_422(kube_client: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube_client)
    v1.create_node({"metadata": {"name": "gpu-1"}})
    with pytest.raises(ApiException) as caught:
        v1.patch_node("gpu-1", [{"op": "test", "path": "/metadata/name", "value": "other"}])
    assert caught.value.status == 422 and status_of(caught.value)["reason"] == "Invalid"


def test_put_replaces_and_refuses_a_stale_resource_version(kube_client: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube_client)
    v1.create_namespaced_pod(NS, pod("web-0", {"app": "web"}))
    first = v1.read_namespaced_pod("web-0", NS)
    first.metadata.labels = {"app": "web", "drained": "yes"}
    replaced = v1.replace_namespaced_pod("web-0", NS, first)
    assert replaced.metadata.labels["drained"] == "yes" and replaced.metadata.uid == first.metadata.uid
    assert int(replaced.metadata.resource_version) > int(first.metadata.resource_version)
    with pytest.raises(ApiException) as caught:
        v1.replace_namespaced_pod("web-0", NS, first)  # still carries the old resourceVersion
    assert caught.value.status == 409 and status_of(caught.value)["reason"] == "Conflict"


# --- subresources ---------------------------------------------------------------------------

def test_eviction_default_is_201_and_deletes_the_pod(fakekube: FakeKube, kube_client: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube_client)
    v1.create_namespaced_pod(NS, pod("web-0"))
    body = client.V1Eviction(metadata=client.V1ObjectMeta(name="web-0", namespace=NS),
                             delete_options=client.V1DeleteOptions(grace_period_seconds=int(30.0)))
    _, code, _ = v1.create_namespaced_pod_eviction_with_http_info("web-0", NS, body)
    assert code == 201
    assert not fakekube.exists("", "v1", "pods", "web-0", NS)
    [sent] = fakekube.requests(method="POST", path_endswith="/eviction")
    assert sent.path == f"/api/v1/namespaces/{NS}/pods/web-0/eviction"
    assert sent.body["deleteOptions"] == {"gracePeriodSeconds": 30}


def test_eviction_blocked_by_a_budget_is_429(fakekube: FakeKube, kube_client: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube_client)
    v1.create_namespaced_pod(NS, pod("web-0"))
    fakekube.set_eviction(NS, "web-0", status=429, times=1)
    body = {"metadata": {"name": "web-0", "namespace": NS}}
    with pytest.raises(ApiException) as caught:
        v1.create_namespaced_pod_eviction("web-0", NS, body)
    assert caught.value.status == 429
    status = status_of(caught.value)
    assert status["reason"] == "TooManyRequests" and status["details"]["causes"][0]["reason"] == "DisruptionBudget"
    assert fakekube.exists("", "v1", "pods", "web-0", NS)
    v1.create_namespaced_pod_eviction("web-0", NS, body)  # `times` used up: evicted now
    assert not fakekube.exists("", "v1", "pods", "web-0", NS)


def ready_pod(name: str, labels: dict[str, str], ready: bool = True) -> dict[str, Any]:
    p = pod(name, labels, node="node-a")
    p["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    return p


def budget(name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"selector": {"matchLabels": {"app": "web"}}, **spec}}


def evict(v1: client.CoreV1Api, name: str) -> int:
    try:
        v1.create_namespaced_pod_eviction(name, NS, {"metadata": {"name": name, "namespace": NS}})
    except ApiException as exc:
        return exc.status
    return 201


def test_a_pod_disruption_budget_decides_evictions_as_the_api_server_does(
        fakekube: FakeKube, kube_client: client.ApiClient) -> None:
    """minAvailable 2 of 2 Ready: 429 with the budget's cause; maxUnavailable 1 of 3: one goes, the
    next waits while the first still terminates (status.disruptedPods); a pod not Ready goes
    while the budget is healthy (IfHealthyBudget); two budgets on one pod: 500."""
    v1, policy = client.CoreV1Api(kube_client), client.PolicyV1Api(kube_client)
    for n in ("web-0", "web-1"):
        fakekube.add("", "v1", "pods", ready_pod(n, {"app": "web"}), NS)
    policy.create_namespaced_pod_disruption_budget(NS, budget("web", min_available=2))
    with pytest.raises(ApiException) as caught:
        v1.create_namespaced_pod_eviction("web-0", NS, {"metadata": {"name": "web-0", "namespace": NS}})
    status = status_of(caught.value)
    assert (caught.value.status, status["reason"], status["message"]) == (
        429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget.")
    assert status["details"]["causes"] == [{"reason": "DisruptionBudget",
                                            "message": "The disruption budget web needs 2 healthy pods and has 2 "
                                                       "currently"}]
    policy.delete_namespaced_pod_disruption_budget("web", NS)
    fakekube.add("", "v1", "pods", ready_pod("web-2", {"app": "web"}), NS)
    policy.create_namespaced_pod_disruption_budget(NS, budget("web", max_unavailable=1))
    assert evict(v1, "web-0") == 201
    assert fakekube.get("", "v1", "pods", "web-0", NS)["metadata"]["deletionTimestamp"], "terminating, gracefully"
    assert evict(v1, "web-1") == 429, "web-0 is still going: no disruption left"
    got = policy.read_namespaced_pod_disruption_budget("web", NS).status
    assert (got.current_healthy, got.desired_healthy, got.expected_pods) == (3, 2, 3) and "web-0" in got.disrupted_pods
    policy.delete_namespaced_pod_disruption_budget("web", NS)
    policy.create_namespaced_pod_disruption_budget(NS, budget("web", min_available=2))
    fakekube.add("", "v1", "pods", ready_pod("web-9", {"app": "web"}, ready=False), NS)
    assert evict(v1, "web-1") == 429, "no disruption allowed: 2 Ready of 2 needed"
    assert evict(v1, "web-9") == 201, "not Ready, and the budget is healthy (web-1, web-2 Ready)"
    policy.create_namespaced_pod_disruption_budget(NS, budget("web-too", min_available=0))
    assert evict(v1, "web-2") == 500
    assert fakekube.exists("", "v1", "pods", "web-1", NS) and fakekube.exists("", "v1", "pods", "web-2", NS)


def test_a_server_side_dry_run_answers_as_the_write_would_and_persists_nothing(
        fakekube: FakeKube, kube_client: client.ApiClient) -> None:
    """?dryRun=All: the request is validated and answered as the real write would be (a
    refusal is still a refusal), and no object, no resourceVersion and no watch event results."""
    v1 = client.CoreV1Api(kube_client)
    v1.create_namespaced_pod(NS, pod("web-0", {"app": "web"}))
    rv = fakekube.store.resource_version
    made = v1.create_namespaced_pod(NS, pod("web-1"), dry_run="All")
    assert made.metadata.name == "web-1" and made.metadata.uid
    labelled = v1.patch_namespace(NS, {"metadata": {"labels": {"team": "ml"}}}, dry_run="All")
    assert labelled.metadata.labels["team"] == "ml"
    v1.delete_namespaced_pod("web-0", NS, dry_run="All")
    with pytest.raises(ApiException) as caught:
        v1.create_namespaced_pod(NS, pod("Bad_Name"), dry_run="All")
    assert caught.value.status == 422
    assert fakekube.store.resource_version == rv
    assert [p.metadata.name for p in v1.list_namespaced_pod(NS).items] == ["web-0"]
    assert v1.read_namespaced_pod("web-0", NS).metadata.deletion_timestamp is None
    assert "team" not in (v1.read_namespace(NS).metadata.labels or {})
    time.sleep(0.5)
    assert fakekube.exists("", "v1", "pods", "web-0", NS), "no grace timer left behind by the dry delete"


def test_eviction_of_a_missing_pod_is_404(kube_client: client.ApiClient) -> None:
    with pytest.raises(ApiException) as caught:
        client.CoreV1Api(kube_client).create_namespaced_pod_eviction("ghost", NS, {"metadata": {"name": "ghost"}})
    assert caught.value.status == 404


def test_deployment_scale_subresource(fakekube: FakeKube, kube_client: client.ApiClient) -> None:
    apps = client.AppsV1Api(kube_client)
    apps.create_namespaced_deployment(NS, deployment("pipeline", 3))
    scale = apps.read_namespaced_deployment_scale("pipeline", NS)
    assert (scale.kind, scale.api_version, scale.spec.replicas) == ("Scale", "autoscaling/v1", 3)
    assert scale.status.selector == "app=pipeline"
    patched = apps.patch_namespaced_deployment_scale("pipeline", NS, {"spec": {"replicas": 0}})
    assert patched.spec.replicas == 0 and apps.read_namespaced_deployment("pipeline", NS).spec.replicas == 0
    scale = apps.read_namespaced_deployment_scale("pipeline", NS)
    scale.spec.replicas = 2
    apps.replace_namespaced_deployment_scale("pipeline", NS, scale)
    assert apps.read_namespaced_deployment("pipeline", NS).spec.replicas == 2
    [patch] = fakekube.requests(method="PATCH")
    assert patch.path == f"/apis/apps/v1/namespaces/{NS}/deployments/pipeline/scale"
    assert patch.content_type == "application/strategic-merge-patch+json"


def test_scale_to_a_negative_count_is_422(kube_client: client.ApiClient) -> None:
    apps = client.AppsV1Api(kube_client)
    apps.create_namespaced_deployment(NS, deployment("pipeline", 1))
    with pytest.raises(ApiException) as caught:
        apps.patch_namespaced_deployment_scale("pipeline", NS, {"spec": {"replicas": -1}})
    assert caught.value.status == 422


# --- other groups ---------------------------------------------------------------------------

def test_pdbs_and_hpas(kube_client: client.ApiClient) -> None:
    policy, autoscaling = client.PolicyV1Api(kube_client), client.AutoscalingV2Api(kube_client)
    policy.create_namespaced_pod_disruption_budget(NS, {
        "metadata": {"name": "ref"}, "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "ref"}}}})
    autoscaling.create_namespaced_horizontal_pod_autoscaler(NS, {
        "metadata": {"name": "ref"}, "spec": {"maxReplicas": 6, "minReplicas": 2, "scaleTargetRef": {
            "apiVersion": "apps/v1", "kind": "Deployment", "name": "ref"}}})
    [pdb] = policy.list_namespaced_pod_disruption_budget(NS).items
    assert pdb.spec.min_available == 2 and pdb.kind == "PodDisruptionBudget"
    hpa = autoscaling.read_namespaced_horizontal_pod_autoscaler("ref", NS)
    assert hpa.api_version == "autoscaling/v2" and hpa.spec.max_replicas == 6


def test_custom_objects(fakekube: FakeKube, kube_client: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(kube_client)
    chaos = {"apiVersion": "chaos-mesh.org/v1alpha1", "kind": "NetworkChaos",
             "metadata": {"name": "slow-store", "labels": {"inferchaos.io/run": "r1"}},
             "spec": {"action": "delay", "mode": "all", "delay": {"latency": "2s"},
                      "selector": {"namespaces": [NS], "labelSelectors": {"app": "ref"}}}}
    created = custom.create_namespaced_custom_object("chaos-mesh.org", "v1alpha1", NS, "networkchaos", chaos)
    assert created["metadata"]["uid"] and created["metadata"]["namespace"] == NS
    custom.create_namespaced_custom_object("chaos-mesh.org", "v1alpha1", NS, "iochaos", {
        "apiVersion": "chaos-mesh.org/v1alpha1", "kind": "IOChaos", "metadata": {"name": "slow-disk"},
        "spec": {"action": "latency", "mode": "one", "volumePath": "/models", "delay": "1s"}})
    listed = custom.list_namespaced_custom_object("chaos-mesh.org", "v1alpha1", NS, "networkchaos",
                                                  label_selector="inferchaos.io/run=r1")
    assert listed["kind"] == "NetworkChaosList" and [i["metadata"]["name"] for i in listed["items"]] == ["slow-store"]
    custom.patch_namespaced_custom_object("chaos-mesh.org", "v1alpha1", NS, "networkchaos", "slow-store",
                                          {"spec": {"delay": {"latency": "5s"}}})
    got = custom.get_namespaced_custom_object("chaos-mesh.org", "v1alpha1", NS, "networkchaos", "slow-store")
    assert got["spec"]["delay"] == {"latency": "5s"} and got["spec"]["mode"] == "all"
    assert fakekube.requests(method="PATCH")[0].content_type == "application/merge-patch+json"
    custom.delete_namespaced_custom_object("chaos-mesh.org", "v1alpha1", NS, "networkchaos", "slow-store")
    assert custom.list_namespaced_custom_object("chaos-mesh.org", "v1alpha1", NS, "networkchaos")["items"] == []
    keda = custom.list_namespaced_custom_object("keda.sh", "v1alpha1", NS, "scaledobjects")
    assert keda["items"] == [] and keda["kind"] == "ScaledObjectList"


def test_discovery_and_version(kube_client: client.ApiClient) -> None:
    assert client.VersionApi(kube_client).get_code().git_version.startswith("v1.")
    assert client.CoreApi(kube_client).get_api_versions().versions == ["v1"]
    groups = {g.name for g in client.ApisApi(kube_client).get_api_versions().groups}
    assert {"apps", "policy", "autoscaling", "chaos-mesh.org", "keda.sh"} <= groups
    names = {r.name for r in client.CoreV1Api(kube_client).get_api_resources().resources}
    assert {"pods", "pods/eviction", "nodes", "namespaces", "events"} <= names


def test_fail_next_injects_a_status_error(fakekube: FakeKube, kube_client: client.ApiClient) -> None:
    fakekube.fail_next("GET", "/api/v1/nodes", 503, "apiserver is restarting")
    v1 = client.CoreV1Api(kube_client)
    with pytest.raises(ApiException) as caught:
        v1.list_node()
    assert caught.value.status == 503 and status_of(caught.value)["message"] == "apiserver is restarting"
    assert v1.list_node().items == []


# --- watch ----------------------------------------------------------------------------------

def test_watch_streams_filtered_events_and_ends_at_timeout(fakekube: FakeKube, kube_client: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube_client)
    start_rv = v1.list_namespaced_pod(NS).metadata.resource_version

    def churn() -> None:
        wait_for(lambda: fakekube.requests(method="GET", path=f"/api/v1/namespaces/{NS}/pods"))
        v1.create_namespaced_pod(NS, pod("web-0", {"app": "web"}))
        v1.create_namespaced_pod(NS, pod("feed-0", {"app": "feed"}))
        v1.create_namespaced_pod("other", pod("web-9", {"app": "web"}, ns="other"))
        v1.patch_namespaced_pod("web-0", NS, {"metadata": {"labels": {"drain": "yes"}}})
        v1.delete_namespaced_pod("web-0", NS)

    fakekube.clear_requests()
    writer = threading.Thread(target=churn)
    writer.start()
    began = time.monotonic()
    seen = [(e["type"], e["object"].metadata.name, type(e["object"]).__name__)
            for e in watch.Watch().stream(v1.list_namespaced_pod, NS, label_selector="app=web",
                                          resource_version=start_rv, timeout_seconds=2,
                                          _request_timeout=WATCH_READ_TIMEOUT)]
    elapsed = time.monotonic() - began
    writer.join()
    # the delete of an unscheduled pod is graceful with grace 0: the apiserver writes
    # deletionTimestamp (MODIFIED), then removes it (DELETED), as a watch on a cluster shows
    assert seen == [("ADDED", "web-0", "V1Pod"), ("MODIFIED", "web-0", "V1Pod"), ("MODIFIED", "web-0", "V1Pod"),
                    ("DELETED", "web-0", "V1Pod")]
    assert 1.9 <= elapsed < 4, elapsed
    [watch_request] = fakekube.requests(method="GET", path=f"/api/v1/namespaces/{NS}/pods")
    assert watch_request.query["watch"] == "true" and watch_request.query["timeoutSeconds"] == "2"


def test_watch_without_resource_version_starts_with_the_current_objects(kube_client: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube_client)
    v1.create_node({"metadata": {"name": "gpu-1"}})
    events = list(watch.Watch().stream(v1.list_node, timeout_seconds=1, _request_timeout=WATCH_READ_TIMEOUT))
    assert [(e["type"], e["object"].metadata.name) for e in events] == [("ADDED", "gpu-1")]


def test_watch_410_expired_is_handled_by_relisting(fakekube: FakeKube, kube_client: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube_client)
    v1.create_namespaced_pod(NS, pod("web-0"))
    old_rv = v1.list_namespaced_pod(NS).metadata.resource_version  # "0" would mean "any": use a real one
    v1.patch_namespaced_pod("web-0", NS, {"metadata": {"labels": {"seen": "yes"}}})
    fakekube.expire_watches()
    v1.create_namespaced_pod(NS, pod("web-1"))

    def watch_from(rv: str) -> list[tuple[str, str]]:
        stream = watch.Watch().stream(v1.list_namespaced_pod, NS, resource_version=rv, timeout_seconds=1,
                                       _request_timeout=WATCH_READ_TIMEOUT)
        return [(e["type"], e["object"].metadata.name) for e in stream]

    with pytest.raises(ApiException) as caught:
        watch_from(old_rv)
    assert caught.value.status == 410 and "Expired" in caught.value.reason
    listing = v1.list_namespaced_pod(NS)  # re-list, then watch from the list's resourceVersion
    assert sorted(p.metadata.name for p in listing.items) == ["web-0", "web-1"]
    v1.delete_namespaced_pod("web-1", NS)
    assert watch_from(listing.metadata.resource_version) == [("MODIFIED", "web-1"), ("DELETED", "web-1")]


def test_a_label_selector_watch_sees_a_pod_relabelled_out_as_deleted_and_back_in_as_added(
        fakekube: FakeKube, kube_client: client.ApiClient) -> None:
    """The watch cache tells a selector's watcher of an object that stops matching with a
    DELETED carrying its previous content at the change's resourceVersion, and of one that
    starts matching with an ADDED (kube-apiserver cacheWatcher.convertToWatchEvent)."""
    v1 = client.CoreV1Api(kube_client)
    v1.create_namespaced_pod(NS, pod("web-0", {"app": "web"}))
    rv = v1.list_namespaced_pod(NS).metadata.resource_version

    def churn() -> None:
        wait_for(lambda: fakekube.requests(method="GET", path=f"/api/v1/namespaces/{NS}/pods"))
        v1.patch_namespaced_pod("web-0", NS, {"metadata": {"labels": {"app": "quarantine"}}})
        v1.patch_namespaced_pod("web-0", NS, {"metadata": {"labels": {"note": "still-out"}}})
        v1.patch_namespaced_pod("web-0", NS, {"metadata": {"labels": {"app": "web"}}})

    fakekube.clear_requests()
    writer = threading.Thread(target=churn)
    writer.start()
    seen = [(e["type"], e["object"].metadata.labels.get("app"), e["object"].metadata.resource_version)
            for e in watch.Watch().stream(v1.list_namespaced_pod, NS, label_selector="app=web",
                                          resource_version=rv, timeout_seconds=2,
                                          _request_timeout=WATCH_READ_TIMEOUT)]
    writer.join()
    final = v1.read_namespaced_pod("web-0", NS).metadata.resource_version
    assert [(t, app) for t, app, _ in seen] == [("DELETED", "web"), ("ADDED", "web")]
    assert int(seen[0][2]) == int(rv) + 1 and seen[1][2] == final


def test_bookmarks_come_only_when_allowed_every_interval_and_before_the_deadline(
        fakekube: FakeKube, kube_client: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube_client)
    v1.create_namespaced_pod(NS, pod("web-0"))
    rv = v1.list_namespaced_pod(NS).metadata.resource_version
    fakekube.bookmark_every_s = 1.0

    def events(**extra: Any) -> list[tuple[float, str, Any]]:
        t0, out = time.monotonic(), []
        for e in watch.Watch().stream(v1.list_namespaced_pod, NS, resource_version=rv, timeout_seconds=4,
                                      _request_timeout=WATCH_READ_TIMEOUT, **extra):
            out.append((time.monotonic() - t0, e["type"], e["raw_object"]))
        return out

    assert events() == []
    marks = events(allow_watch_bookmarks=True)
    # every second, and the last 2 s before the 4-s deadline (the watch cache's nextBookmarkTime)
    assert [t for _, t, _ in marks] == ["BOOKMARK", "BOOKMARK"], marks
    assert [round(at) for at, _, _ in marks] == [1, 2], marks
    assert all(obj["metadata"] == {"resourceVersion": rv} and obj["kind"] == "Pod" for _, _, obj in marks)


def test_what_the_client_sends(fakekube: FakeKube, kube_client: client.ApiClient) -> None:
    """kubernetes 37 sends creates (and evictions) with no Content-Type at all; it switches a
    dict PATCH body from the declared json-patch to strategic merge; `watch` goes as "true"."""
    v1 = client.CoreV1Api(kube_client)
    v1.create_namespaced_pod(NS, pod("web-0"))
    v1.create_namespaced_pod_eviction("web-0", NS, {"metadata": {"name": "web-0"}})
    v1.create_node({"metadata": {"name": "gpu-1"}})
    v1.patch_node("gpu-1", {"spec": {"unschedulable": True}})
    v1.patch_node("gpu-1", [{"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}])
    sent = [(r.method, r.content_type) for r in fakekube.requests()]
    assert sent == [("POST", ""), ("POST", ""), ("POST", ""),
                    ("PATCH", "application/strategic-merge-patch+json"), ("PATCH", "application/json-patch+json")]


def test_untaint_by_json_patch_and_strategic_delete_directive(kube_client: client.ApiClient) -> None:
    v1, apps = client.CoreV1Api(kube_client), client.AppsV1Api(kube_client)
    v1.create_node({"metadata": {"name": "gpu-1"}, "spec": {"taints": [
        {"key": "a", "effect": "NoSchedule"}, {"key": "inferchaos.io/spot-reclaim", "effect": "NoExecute"}]}})
    v1.patch_node("gpu-1", [{"op": "test", "path": "/spec/taints/1/key", "value": "inferchaos.io/spot-reclaim"},
                            {"op": "remove", "path": "/spec/taints/1"}])
    assert [t.key for t in v1.read_node("gpu-1").spec.taints] == ["a"]
    apps.create_namespaced_deployment(NS, deployment("ref", 1))
    apps.patch_namespaced_deployment("ref", NS, {"spec": {"template": {"spec": {"containers": [
        {"name": "hog", "image": "hog:1"}]}}}})
    apps.patch_namespaced_deployment("ref", NS, {"spec": {"template": {"spec": {"containers": [
        {"name": "hog", "$patch": "delete"}]}}}})
    names = [c.name for c in apps.read_namespaced_deployment("ref", NS).spec.template.spec.containers]
    assert names == ["server"]


def test_seeded_objects_are_served_but_not_logged(fakekube: FakeKube, kube_client: client.ApiClient) -> None:
    fakekube.add("", "v1", "pods", pod("web-0", {"app": "web"}, node="gpu-1"))
    fakekube.add("keda.sh", "v1alpha1", "scaledobjects", {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "ref", "namespace": NS},
        "spec": {"scaleTargetRef": {"name": "ref"}}})
    assert fakekube.requests() == []
    [seeded] = client.CoreV1Api(kube_client).list_namespaced_pod(NS, field_selector="spec.nodeName=gpu-1").items
    assert seeded.metadata.name == "web-0" and seeded.metadata.uid
    got = client.CustomObjectsApi(kube_client).get_namespaced_custom_object("keda.sh", "v1alpha1", NS,
                                                                           "scaledobjects", "ref")
    assert got["kind"] == "ScaledObject" and got["spec"]["scaleTargetRef"] == {"name": "ref"}
    assert [r.method for r in fakekube.requests()] == ["GET", "GET"]


# --- RBAC -----------------------------------------------------------------------------------

from pathlib import Path  # noqa: E402

from kubernetes.stream import stream  # noqa: E402

from tests.fakekube import Policy, request_attributes, service_account  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
RUNNER = service_account("inferchaos", "inferchaos-runner")
TOKENS = {"runner-token": RUNNER}


def role(name: str, namespace: str, rules: list[dict[str, Any]], kind: str = "Role") -> dict[str, Any]:
    meta = {"name": name, "namespace": namespace} if kind == "Role" else {"name": name}
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta, "rules": rules}


def binding(name: str, role_name: str, namespace: str | None = None, role_kind: str = "Role") -> dict[str, Any]:
    kind = "RoleBinding" if namespace else "ClusterRoleBinding"
    meta = {"name": name, "namespace": namespace} if namespace else {"name": name}
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role_name},
            "subjects": [{"kind": "ServiceAccount", "name": "inferchaos-runner", "namespace": "inferchaos"}]}


def pod_reader_in_ml() -> Policy:
    return Policy.from_documents([
        role("reader", "ml", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]),
        binding("reader", "reader", "ml")])


def forbidden(exc: ApiException) -> tuple[int, str, dict[str, Any]]:
    body = status_of(exc)
    assert (body["kind"], body["apiVersion"], body["status"], body["reason"], body["code"]) == (
        "Status", "v1", "Failure", "Forbidden", 403)
    return exc.status, body["message"], body.get("details", {})


def test_rbac_a_request_without_a_known_token_is_401() -> None:
    with FakeKube(policy=pod_reader_in_ml(), tokens=TOKENS) as fake:
        for token in (None, "stolen"):
            api = fake.api_client(token)
            with pytest.raises(ApiException) as caught:
                client.CoreV1Api(api).list_namespaced_pod("ml")
            api.close()
            assert caught.value.status == 401
            assert status_of(caught.value) == {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                               "status": "Failure", "message": "Unauthorized",
                                               "reason": "Unauthorized", "code": 401}
        assert fake.authorizations == []  # never got past authentication


def test_rbac_a_role_grants_in_its_namespace_only() -> None:
    with FakeKube(policy=pod_reader_in_ml(), tokens=TOKENS) as fake:
        fake.add("", "v1", "pods", pod("web-0", ns="ml"))
        fake.add("", "v1", "pods", pod("web-0", ns="other"))
        api = fake.api_client("runner-token")
        v1 = client.CoreV1Api(api)
        assert [p.metadata.name for p in v1.list_namespaced_pod("ml").items] == ["web-0"]
        assert v1.read_namespaced_pod("web-0", "ml").metadata.namespace == "ml"
        with pytest.raises(ApiException) as caught:
            v1.list_namespaced_pod("other")
        assert forbidden(caught.value) == (403, f'pods is forbidden: User "{RUNNER}" cannot list resource "pods" '
                                                 'in API group "" in the namespace "other"', {"kind": "pods"})
        with pytest.raises(ApiException) as caught:
            v1.delete_namespaced_pod("web-0", "ml")
        assert status_of(caught.value) == {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": f'pods "web-0" is forbidden: User "{RUNNER}" cannot delete resource "pods" '
                       'in API group "" in the namespace "ml"',
            "reason": "Forbidden", "details": {"name": "web-0", "kind": "pods"}, "code": 403}
        with pytest.raises(ApiException) as caught:
            v1.create_namespaced_pod_eviction("web-0", "ml", {"metadata": {"name": "web-0"}})
        assert forbidden(caught.value)[1].endswith(
            'cannot create resource "pods/eviction" in API group "" in the namespace "ml"')
        with pytest.raises(ApiException) as caught:
            client.AppsV1Api(api).patch_namespaced_deployment_scale("ref", "ml", {"spec": {"replicas": 0}})
        assert forbidden(caught.value) == (
            403, f'deployments.apps "ref" is forbidden: User "{RUNNER}" cannot patch resource "deployments/scale" '
                 'in API group "apps" in the namespace "ml"', {"name": "ref", "group": "apps", "kind": "deployments"})
        api.close()
        assert fake.exists("", "v1", "pods", "web-0", "ml")  # refused before anything happened
        decided = [(a.verb, a.group, a.resource, a.namespace, a.name, a.allowed) for a in fake.authorizations]
        assert decided == [("list", "", "pods", "ml", "", True), ("get", "", "pods", "ml", "web-0", True),
                           ("list", "", "pods", "other", "", False), ("delete", "", "pods", "ml", "web-0", False),
                           ("create", "", "pods/eviction", "ml", "web-0", False),
                           ("patch", "apps", "deployments/scale", "ml", "ref", False)]
        assert {a.user for a in fake.authorizations} == {RUNNER}


def test_rbac_cluster_role_binding_grants_cluster_scope_and_role_binding_does_not() -> None:
    nodes = role("nodes", "", [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}], "ClusterRole")
    policy = Policy.from_documents([nodes, binding("nodes", "nodes", role_kind="ClusterRole")])
    with FakeKube(policy=policy, tokens=TOKENS) as fake:
        fake.add("", "v1", "nodes", {"metadata": {"name": "gpu-1"}})
        api = fake.api_client("runner-token")
        v1 = client.CoreV1Api(api)
        v1.patch_node("gpu-1", {"spec": {"unschedulable": True}})
        assert v1.read_node("gpu-1").spec.unschedulable is True
        with pytest.raises(ApiException) as caught:
            v1.list_node()
        assert forbidden(caught.value)[1] == (f'nodes is forbidden: User "{RUNNER}" cannot list resource "nodes" '
                                              'in API group "" at the cluster scope')
        with pytest.raises(ApiException) as caught:
            v1.delete_node("gpu-1")
        assert forbidden(caught.value)[1].startswith('nodes "gpu-1" is forbidden: ')
        api.close()
    # the same ClusterRole bound by a RoleBinding grants in that namespace only: never nodes
    local = Policy.from_documents([
        role("pods", "", [{"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["*"]}], "ClusterRole"),
        binding("pods", "pods", "ml", role_kind="ClusterRole")])
    assert local.allows(RUNNER, "delete", "", "pods", namespace="ml", name="web-0")
    assert not local.allows(RUNNER, "delete", "", "pods", namespace="other", name="web-0")
    assert not local.allows(RUNNER, "patch", "", "nodes", name="gpu-1")
    assert not local.allows(service_account("inferchaos", "someone-else"), "get", "", "pods", namespace="ml")


def test_rbac_rule_matching() -> None:
    policy = Policy.from_documents([
        role("r", "ml", [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"],
                          "resourceNames": ["ref"]},
                         {"apiGroups": ["*"], "resources": ["*/scale"], "verbs": ["update"]},
                         {"apiGroups": ["chaos-mesh.org"], "resources": ["*"], "verbs": ["*"]}]),
        binding("r", "r", "ml")])
    allows = lambda *a, **k: policy.allows(RUNNER, *a, **k)  # noqa: E731
    assert allows("get", "apps", "deployments", namespace="ml", name="ref")
    assert not allows("get", "apps", "deployments", namespace="ml", name="other")
    assert not allows("list", "apps", "deployments", namespace="ml")  # resourceNames never match a list
    assert allows("update", "apps", "deployments", "scale", namespace="ml", name="ref")
    assert not allows("update", "apps", "deployments", namespace="ml", name="ref")
    assert allows("deletecollection", "chaos-mesh.org", "networkchaos", namespace="ml")
    assert allows("get", "chaos-mesh.org", "networkchaos", "status", namespace="ml", name="x")  # "*" covers subs
    assert not allows("get", "", "pods", namespace="ml")


def test_rbac_a_binding_to_a_missing_role_says_so_in_the_denial() -> None:
    with FakeKube(policy=Policy.from_documents([binding("b", "ghost", "ml")]), tokens=TOKENS) as fake:
        api = fake.api_client("runner-token")
        with pytest.raises(ApiException) as caught:
            client.CoreV1Api(api).list_namespaced_pod("ml")
        api.close()
        assert forbidden(caught.value)[1].endswith(
            'in the namespace "ml": RBAC: role.rbac.authorization.k8s.io "ghost" not found')


@pytest.mark.parametrize(("exec_verb", "granted", "allowed"), [
    ("create", ["get"], False),
    ("create", ["create"], False),  # 1.35+: the GET upgrade is authorised as get, then also as create
    ("create", ["get", "create"], True),
    ("get", ["get"], True),
    ("get", ["create"], False),  # before 1.35 the websocket exec is a plain `get`
])
def test_rbac_exec_over_the_websocket(exec_verb: str, granted: list[str], allowed: bool) -> None:
    """kubernetes#134577 (1.35, AuthorizePodWebsocketUpgradeCreatePermission): `create` is checked
    in addition to the `get` the GET request is authorised as; before, `get` alone sufficed."""
    policy = Policy.from_documents([
        role("exec", "ml", [{"apiGroups": [""], "resources": ["pods/exec"], "verbs": granted}]),
        binding("exec", "exec", "ml")])
    with FakeKube(policy=policy, tokens=TOKENS, exec_verb=exec_verb) as fake:
        fake.add("", "v1", "pods", pod("web-0", ns="ml"))
        api = fake.api_client("runner-token")
        v1 = client.CoreV1Api(api)

        def run() -> str:
            return stream(v1.connect_get_namespaced_pod_exec, "web-0", "ml", command=["true"],
                          stderr=True, stdin=False, stdout=True, tty=False)

        if allowed:
            run()
            assert [e.argv for e in fake.execs] == [("true",)]
        else:
            with pytest.raises(ApiException):
                run()
            assert fake.execs == []
        api.close()
        checked = [(a.verb, a.resource, a.allowed) for a in fake.authorizations]
        assert checked[-1] == ("create" if exec_verb == "create" and "get" in granted else "get", "pods/exec", allowed)
        assert checked[0][:2] == ("get", "pods/exec")


def test_rbac_policy_from_the_repo_manifests() -> None:
    policy = Policy.from_manifests([REPO / "deploy/base/rbac.yaml",
                                    REPO / "deploy/components/spot-faults/node-access.yaml"], namespace_override="ml")
    assert policy.service_accounts == [RUNNER]
    assert policy.allows(RUNNER, "list", "", "pods", namespace="ml")
    assert policy.allows(RUNNER, "create", "", "pods", "eviction", namespace="ml", name="web-0")
    assert policy.allows(RUNNER, "get", "", "nodes", name="gpu-1")  # ClusterRoleBinding: cluster-wide
    assert policy.allows(RUNNER, "delete", "", "pods", namespace="ml", name="web-0")
    assert not policy.allows(RUNNER, "delete", "", "pods", namespace="inferchaos", name="web-0")  # the Role is in ml
    assert not policy.allows(RUNNER, "delete", "", "namespaces", namespace="ml", name="ml")
    assert not policy.allows(RUNNER, "delete", "", "nodes", name="gpu-1")
    with FakeKube(policy=policy, tokens=TOKENS) as fake:
        fake.add("", "v1", "namespaces", {"metadata": {"name": "ml"}})
        api = fake.api_client("runner-token")
        v1 = client.CoreV1Api(api)
        assert v1.list_namespaced_pod("ml").items == []
        assert client.VersionApi(api).get_code().git_version  # discovery: any authenticated user
        assert {r.name for r in v1.get_api_resources().resources} >= {"pods"}
        with pytest.raises(ApiException) as caught:
            v1.delete_namespace("ml")
        assert forbidden(caught.value)[1] == (f'namespaces "ml" is forbidden: User "{RUNNER}" cannot delete resource '
                                              '"namespaces" in API group "" in the namespace "ml"')
        api.close()


def test_without_a_policy_everything_is_allowed_and_recorded(fakekube: FakeKube, kube_client: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube_client)
    v1.create_namespaced_pod(NS, pod("web-0"))
    v1.list_pod_for_all_namespaces(field_selector="metadata.name=web-0")
    v1.delete_collection_namespaced_pod(NS)
    assert [(a.user, a.verb, a.resource, a.namespace, a.name, a.allowed) for a in fakekube.authorizations] == [
        ("", "create", "pods", NS, "", True), ("", "list", "pods", "", "web-0", True),
        ("", "deletecollection", "pods", NS, "", True)]


@pytest.mark.parametrize(("method", "path", "query", "expected"), [
    ("GET", "/api/v1/namespaces/ml/pods", "", ("list", "", "pods", "", "ml", "")),
    ("GET", "/api/v1/namespaces/ml/pods", "watch=true", ("watch", "", "pods", "", "ml", "")),
    ("GET", "/api/v1/watch/namespaces/ml/pods/web-0", "", ("watch", "", "pods", "", "ml", "web-0")),
    ("GET", "/api/v1/pods", "fieldSelector=spec.nodeName%3Dn,metadata.name%3Dweb-0", ("list", "", "pods", "", "", "web-0")),
    ("DELETE", "/api/v1/namespaces/ml/pods", "", ("deletecollection", "", "pods", "", "ml", "")),
    ("DELETE", "/api/v1/namespaces/ml/pods/web-0", "", ("delete", "", "pods", "", "ml", "web-0")),
    ("POST", "/api/v1/namespaces/ml/pods/web-0/eviction", "", ("create", "", "pods", "eviction", "ml", "web-0")),
    ("PUT", "/apis/apps/v1/namespaces/ml/deployments/ref/scale", "", ("update", "apps", "deployments", "scale", "ml", "ref")),
    ("GET", "/api/v1/namespaces/ml", "", ("get", "", "namespaces", "", "ml", "ml")),
    ("GET", "/api/v1/namespaces", "", ("list", "", "namespaces", "", "", "")),
    ("PATCH", "/api/v1/nodes/gpu-1", "", ("patch", "", "nodes", "", "", "gpu-1")),
])
def test_request_attributes_as_the_apiserver_derives_them(method: str, path: str, query: str,
                                                          expected: tuple[str, ...]) -> None:
    a = request_attributes(method, path, query)
    assert a.resource_request and (a.verb, a.group, a.resource, a.subresource, a.namespace, a.name) == expected


def test_discovery_paths_are_not_resource_requests() -> None:
    for path in ("/version", "/api", "/api/v1", "/apis", "/apis/apps", "/apis/apps/v1"):
        assert not request_attributes("GET", path).resource_request, path


# --- graceful pod deletion ------------------------------------------------------------------

def scheduled(name: str, ns: str = NS, grace: int | None = None) -> dict[str, Any]:
    body = pod(name, {"app": "web"}, node="gpu-1", ns=ns)
    if grace is not None:
        body["spec"]["terminationGracePeriodSeconds"] = grace
    return body


def events_since(v1: client.CoreV1Api, rv: str) -> list[tuple[str, Any]]:
    stream_ = watch.Watch().stream(v1.list_namespaced_pod, NS, resource_version=rv, timeout_seconds=1,
                                   _request_timeout=WATCH_READ_TIMEOUT)
    return [(e["type"], e["object"]) for e in stream_]


def test_graceful_delete_keeps_the_pod_terminating_until_the_grace_ends(fakekube: FakeKube,
                                                                        kube_client: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube_client)
    v1.create_namespaced_pod(NS, scheduled("web-0"))
    rv = v1.list_namespaced_pod(NS).metadata.resource_version
    began = time.time()
    answer, code, _ = v1.delete_namespaced_pod_with_http_info("web-0", NS, grace_period_seconds=2)
    assert code == 200 and answer.metadata.deletion_grace_period_seconds == 2
    still = v1.read_namespaced_pod("web-0", NS)
    assert still.metadata.deletion_grace_period_seconds == 2
    assert abs(still.metadata.deletion_timestamp.timestamp() - (began + 2)) <= 1.5
    raw = fakekube.get("", "v1", "pods", "web-0", NS)["metadata"]["deletionTimestamp"]
    assert raw.endswith("Z") and len(raw) == len("2026-01-01T00:00:00Z")
    wait_for(lambda: not fakekube.exists("", "v1", "pods", "web-0", NS), timeout_s=6)
    assert time.time() - began >= 1.5
    seen = events_since(v1, rv)
    assert seen[0][0] == "MODIFIED" and seen[0][1].metadata.deletion_timestamp is not None
    assert seen[-1][0] == "DELETED" and {t for t, _ in seen[1:-1]} <= {"MODIFIED"}


def test_grace_zero_removes_the_pod_at_once(fakekube: FakeKube, kube_client: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube_client)
    v1.create_namespaced_pod(NS, scheduled("web-0"))
    gone = v1.delete_namespaced_pod("web-0", NS, grace_period_seconds=0)
    assert gone.metadata.deletion_grace_period_seconds == 0
    assert not fakekube.exists("", "v1", "pods", "web-0", NS)


def test_grace_defaults_and_the_body_wins_over_the_query(fakekube: FakeKube, kube_client: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube_client)
    for name, grace in (("web-0", 5), ("web-1", None)):
        v1.create_namespaced_pod(NS, scheduled(name, grace=grace))
        v1.delete_namespaced_pod(name, NS)
    assert v1.read_namespaced_pod("web-0", NS).metadata.deletion_grace_period_seconds == 5
    assert v1.read_namespaced_pod("web-1", NS).metadata.deletion_grace_period_seconds == 30
    v1.create_namespaced_pod(NS, scheduled("web-2"))
    v1.delete_namespaced_pod("web-2", NS, grace_period_seconds=0, body=client.V1DeleteOptions(grace_period_seconds=20))
    assert v1.read_namespaced_pod("web-2", NS).metadata.deletion_grace_period_seconds == 20
    v1.create_namespaced_pod(NS, pod("pending"))  # never scheduled: no kubelet to wait for
    v1.delete_namespaced_pod("pending", NS, grace_period_seconds=30)
    assert not fakekube.exists("", "v1", "pods", "pending", NS)
    v1.create_namespaced_config_map(NS, {"metadata": {"name": "cm"}})  # other kinds: at once
    v1.delete_namespaced_config_map("cm", NS, grace_period_seconds=30)
    assert not fakekube.exists("", "v1", "configmaps", "cm", NS)


def test_a_second_delete_only_shortens_the_grace(fakekube: FakeKube, kube_client: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube_client)
    v1.create_namespaced_pod(NS, scheduled("web-0"))
    first = v1.delete_namespaced_pod("web-0", NS, grace_period_seconds=30).metadata
    longer = v1.delete_namespaced_pod("web-0", NS, grace_period_seconds=60).metadata
    assert (longer.deletion_grace_period_seconds, longer.deletion_timestamp) == (30, first.deletion_timestamp)
    shorter = v1.delete_namespaced_pod("web-0", NS, grace_period_seconds=1).metadata
    assert shorter.deletion_grace_period_seconds == 1
    assert (first.deletion_timestamp - shorter.deletion_timestamp).total_seconds() == 29
    wait_for(lambda: not fakekube.exists("", "v1", "pods", "web-0", NS), timeout_s=6)


def test_an_object_with_finalizers_terminates_until_the_last_is_removed(
        fakekube: FakeKube, kube_client: client.ApiClient) -> None:
    """As the registry does it: a DELETE marks it (deletionTimestamp, grace 0, MODIFIED) and it
    stays; a second DELETE changes nothing; no finalizer may be added while it terminates (422);
    the update that removes the last finalizer removes it (MODIFIED, then DELETED)."""
    v1 = client.CoreV1Api(kube_client)
    v1.create_namespaced_config_map(NS, {"metadata": {"name": "held", "finalizers": ["example.com/hold"]}})
    rv = v1.list_namespaced_config_map(NS).metadata.resource_version
    answer = v1.delete_namespaced_config_map("held", NS)
    assert answer["kind"] == "ConfigMap" and answer["metadata"]["deletionTimestamp"]  # the object, not a Status
    held = v1.read_namespaced_config_map("held", NS)
    assert held.metadata.deletion_timestamp and held.metadata.deletion_grace_period_seconds == 0
    v1.delete_namespaced_config_map("held", NS)
    assert v1.read_namespaced_config_map("held", NS).metadata.resource_version == held.metadata.resource_version
    with pytest.raises(ApiException) as caught:
        v1.patch_namespaced_config_map("held", NS, {"metadata": {"finalizers": ["example.com/hold", "x.io/more"]}})
    assert caught.value.status == 422 and status_of(caught.value)["message"] == (
        'ConfigMap "held" is invalid: metadata.finalizers: Forbidden: no new finalizers can be added if the object '
        'is being deleted, found new finalizers []string{"x.io/more"}')
    v1.patch_namespaced_config_map("held", NS, {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as gone:
        v1.read_namespaced_config_map("held", NS)
    assert gone.value.status == 404
    events = [(e["type"], e["object"].metadata.name)
              for e in watch.Watch().stream(v1.list_namespaced_config_map, NS, resource_version=rv, timeout_seconds=1,
                                            _request_timeout=WATCH_READ_TIMEOUT)]
    assert events == [("MODIFIED", "held"), ("MODIFIED", "held"), ("DELETED", "held")]


def test_finalize_pod_ends_the_grace_early(fakekube: FakeKube, kube_client: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube_client)
    v1.create_namespaced_pod(NS, scheduled("web-0"))
    v1.create_namespaced_pod(NS, scheduled("web-1"))
    v1.delete_namespaced_pod("web-0", NS, grace_period_seconds=30)
    assert fakekube.exists("", "v1", "pods", "web-0", NS)
    assert fakekube.finalize_pod(NS, "web-0") is True
    assert not fakekube.exists("", "v1", "pods", "web-0", NS)
    assert fakekube.finalize_pod(NS, "web-0") is False  # already gone
    with pytest.raises(ValueError):
        fakekube.finalize_pod(NS, "web-1")  # nobody deleted it


def test_eviction_is_a_graceful_delete(fakekube: FakeKube, kube_client: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube_client)
    v1.create_namespaced_pod(NS, scheduled("web-0"))
    body = client.V1Eviction(metadata=client.V1ObjectMeta(name="web-0", namespace=NS),
                             delete_options=client.V1DeleteOptions(grace_period_seconds=1))
    _, code, _ = v1.create_namespaced_pod_eviction_with_http_info("web-0", NS, body)
    assert code == 201
    terminating = v1.read_namespaced_pod("web-0", NS)
    assert terminating.metadata.deletion_grace_period_seconds == 1
    assert [(c.type, c.reason) for c in terminating.status.conditions] == [("DisruptionTarget", "EvictionByEvictionAPI")]
    wait_for(lambda: not fakekube.exists("", "v1", "pods", "web-0", NS), timeout_s=6)
    v1.create_namespaced_pod(NS, scheduled("web-1", grace=7))  # no deleteOptions: the pod's own grace
    v1.create_namespaced_pod_eviction("web-1", NS, {"metadata": {"name": "web-1"}})
    assert v1.read_namespaced_pod("web-1", NS).metadata.deletion_grace_period_seconds == 7


# --- what the API server refuses on create (its messages: k8s.io/apimachinery validation) ---

@pytest.mark.parametrize("case, body, code, words", [
    ("name not an RFC 1123 subdomain", pod("Bad_Name"), 422,
     ['Pod "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name"', "lowercase RFC 1123 subdomain"]),
    ("label key with a space", pod("p1", labels={"bad key": "x"}), 422,
     ['metadata.labels: Invalid value: "bad key"', "name part must consist of"]),
    ("label value too long", pod("p2", labels={"app": "x" * 64}), 422,
     [f'metadata.labels: Invalid value: "{"x" * 64}": must be no more than 63 characters']),
    ("label value with a space", pod("p5", labels={"app": "a b"}), 422, ["a valid label must be an empty string"]),
    ("label prefix empty", pod("p6", labels={"/app": "x"}), 422, ["prefix part must be non-empty"]),
    ("no containers", {**pod("p3"), "spec": {}}, 422, ['Pod "p3" is invalid: spec.containers: Required value']),
    ("namespace missing", pod("p4", ns="nope"), 404, ['namespaces "nope" not found']),
])
def test_create_is_refused_as_the_api_server_refuses_it(fakekube, kube_client, case, body, code, words):  # noqa: F811
    """Sent as kubectl --validate=false would (the python client refuses a pod without
    containers before sending it): the server's own answer is what is pinned."""
    sent = httpx.post(f"{fakekube.url}/api/v1/namespaces/{body['metadata']['namespace']}/pods", json=body, timeout=10)
    assert sent.status_code == code, sent.text
    status = sent.json()
    assert (status["kind"], status["code"], status["reason"]) == ("Status", code, "Invalid" if code == 422 else "NotFound")
    for word in words:
        assert word in status["message"], status["message"]
    assert client.CoreV1Api(kube_client).list_namespaced_pod(NS).items == []


def test_a_valid_pod_is_created_and_an_unknown_resource_is_not_found(fakekube, kube_client):  # noqa: F811
    created = client.CoreV1Api(kube_client).create_namespaced_pod(NS, pod("ok-1", labels={"app.kubernetes.io/name": "ref"}))
    assert created.metadata.name == "ok-1"
    with pytest.raises(ApiException) as err:
        client.CustomObjectsApi(kube_client).create_namespaced_custom_object(
            "example.com", "v1", NS, "widgets", {"apiVersion": "example.com/v1", "kind": "Widget",
                                                  "metadata": {"name": "w"}})
    assert err.value.status == 404
    assert json.loads(err.value.body)["message"] == "the server could not find the requested resource"
