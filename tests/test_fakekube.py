"""The fake API server, driven by the real kubernetes client over real HTTP.

These pin what the Kubernetes target relies on: if the fake drifts from how the API server
answers (codes, shapes, selectors, subresources, watch endings), these fail first.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from tests.fakekube import FakeKube, fakekube, kube_client  # noqa: F401  (fixtures)

NS = "inferchaos"
WATCH_READ_TIMEOUT = (5, 8)  # a watch that never ends fails here instead of hanging the suite


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


def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.01)


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
    v1.create_namespace({"metadata": {"name": NS}})
    v1.create_node({"metadata": {"name": "gpu-1", "labels": {"pool": "spot"}}})
    assert [n.metadata.name for n in v1.list_namespace().items] == [NS]
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
    assert seen == [("ADDED", "web-0", "V1Pod"), ("MODIFIED", "web-0", "V1Pod"), ("DELETED", "web-0", "V1Pod")]
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
    assert watch_from(listing.metadata.resource_version) == [("DELETED", "web-1")]


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
