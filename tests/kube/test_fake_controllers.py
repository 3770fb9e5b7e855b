"""The fake's stand-ins for controllers we did not write — Chaos Mesh and Kubernetes'
EndpointSlice controller — driven through the real kubernetes client, as the Kubernetes target
would see them. What each pins comes from the real sources (see the modules' docstrings)."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from inferchaos.faults.kubernetes.network import injected
from tests.fakekube import FakeKube, fakekube, kube_client  # noqa: F401  (fixtures)
from tests.fakekube.chaosmesh import ChaosMeshController, admission, review, validate
from tests.fakekube.endpointslices import EndpointSliceController
from tests.support.waiting import wait_for

NS = "chaos"
CHAOS = ("chaos-mesh.org", "v1alpha1")
PODS = ("", "v1", "pods")


def pod(name: str, labels: dict[str, str] | None = None, ip: str | None = "10.1.0.1", ready: bool = True,
        node: str = "node-a", phase: str = "Running") -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if ip:
        status |= {"podIP": ip, "podIPs": [{"ip": ip}]}
    return {"metadata": {"name": name, "namespace": NS, "labels": labels if labels is not None else {"app": "web"}},
            "spec": {"nodeName": node, "containers": [{"name": "server", "image": "ref:1"}]}, "status": status}


def seed(fake: FakeKube, *pods: dict[str, Any]) -> None:
    if not fake.exists("", "v1", "nodes", "node-a"):
        fake.add("", "v1", "nodes", {"metadata": {"name": "node-a", "labels": {"topology.kubernetes.io/zone": "z1"}}})
    for p in pods:
        fake.add(*PODS, p, NS)


def network_chaos(name: str, selector: dict[str, Any], mode: str = "all", **spec: Any) -> dict[str, Any]:
    body = {"mode": mode, "selector": selector, "action": "delay", "direction": "to",
            "delay": {"latency": "50ms", "jitter": "0ms"}}
    return {"apiVersion": "chaos-mesh.org/v1alpha1", "kind": "NetworkChaos",
            "metadata": {"name": name, "namespace": NS}, "spec": body | spec}


def conditions(obj: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions") or []}


def records(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in ((obj.get("status") or {}).get("experiment") or {}).get("containerRecords") or []}


@pytest.fixture(autouse=True)
def namespace(fakekube: FakeKube) -> None:  # noqa: F811
    """The namespace the tests work in exists, as on a cluster: creating in a missing one is 404."""
    fakekube.add("", "v1", "namespaces", {"metadata": {"name": NS}})


@pytest.fixture
def chaos_mesh(fakekube: FakeKube) -> Iterator[ChaosMeshController]:  # noqa: F811
    with ChaosMeshController(fakekube, injection_delay_s=0.1) as controller:
        yield controller
    assert controller.errors == []


@pytest.fixture
def custom(kube_client: client.ApiClient) -> client.CustomObjectsApi:  # noqa: F811
    return client.CustomObjectsApi(kube_client)


def create(custom: client.CustomObjectsApi, body: dict[str, Any], plural: str = "networkchaos") -> None:
    custom.create_namespaced_custom_object(*CHAOS, NS, plural, body)


def get(custom: client.CustomObjectsApi, name: str, plural: str = "networkchaos") -> dict[str, Any]:
    return custom.get_namespaced_custom_object(*CHAOS, NS, plural, name)


def condition_true(custom: client.CustomObjectsApi, name: str, kind: str,
                   plural: str = "networkchaos") -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        obj = get(custom, name, plural)
        return obj if conditions(obj).get(kind) == "True" else None
    return check


def all_injected(custom: client.CustomObjectsApi, name: str) -> Callable[[], dict[str, Any] | None]:
    return condition_true(custom, name, "AllInjected")


# --- Chaos Mesh: selection, injection, conditions ------------------------------------------

def test_pods_map_selects_exactly_those_pods_then_all_injected(
        fakekube: FakeKube, chaos_mesh: ChaosMeshController, custom: client.CustomObjectsApi) -> None:  # noqa: F811
    seed(fakekube, pod("web-1"), pod("web-2", ip="10.1.0.2"), pod("web-3", ip="10.1.0.3"))
    create(custom, network_chaos("slow", {"pods": {NS: ["web-1", "web-2"]}}))
    obj = wait_for(all_injected(custom, "slow"), what="AllInjected")
    assert conditions(obj) == {"Selected": "True", "AllInjected": "True", "AllRecovered": "False", "Paused": "False"}
    got = records(obj)
    assert set(got) == {f"{NS}/web-1", f"{NS}/web-2"}
    assert {(r["phase"], r["selectorKey"], r["injectedCount"], r["recoveredCount"]) for r in got.values()} == {
        ("Injected", ".", 1, 0)}
    assert obj["status"]["experiment"]["desiredPhase"] == "Run"
    assert "chaos-mesh/records" in obj["metadata"]["finalizers"]
    assert chaos_mesh.injected(NS, "slow") == {f"{NS}/web-1", f"{NS}/web-2"}
    effect, = chaos_mesh.effects_on(NS, "web-1")
    assert (effect["action"], effect["delay"]["latency"], effect["chaos"]) == ("delay", "50ms", f"{NS}/slow")
    assert chaos_mesh.effects_on(NS, "web-3") == []
    events = client.CoreV1Api(custom.api_client).list_namespaced_event(NS).items
    assert {e.message for e in events if e.reason == "Applied"} == {
        f"Successfully apply chaos for {NS}/web-1", f"Successfully apply chaos for {NS}/web-2"}


def test_a_deleted_chaos_terminates_until_chaos_mesh_has_recovered_its_pods(
        fakekube: FakeKube, chaos_mesh: ChaosMeshController, custom: client.CustomObjectsApi) -> None:  # noqa: F811
    """Chaos Mesh's finalizer (chaos-mesh/records) holds a deleted chaos until every record is
    recovered: only its disappearance says the traffic is clean again."""
    seed(fakekube, pod("web-1"))
    create(custom, network_chaos("slow", {"pods": {NS: ["web-1"]}}))
    wait_for(all_injected(custom, "slow"), what="AllInjected")
    rv = custom.list_namespaced_custom_object(*CHAOS, NS, "networkchaos")["metadata"]["resourceVersion"]
    answer = custom.delete_namespaced_custom_object(*CHAOS, NS, "networkchaos", "slow")
    assert answer["metadata"]["deletionTimestamp"] and answer["metadata"]["finalizers"] == ["chaos-mesh/records"]
    wait_for(lambda: not fakekube.exists(*CHAOS, "networkchaos", "slow", NS), what="the chaos gone")
    assert chaos_mesh.effects_on(NS, "web-1") == []
    seen = [(e["type"], (e["raw_object"]["status"].get("conditions") or [{}]), e["raw_object"]["metadata"])
            for e in watch.Watch().stream(custom.list_namespaced_custom_object, *CHAOS, NS, "networkchaos",
                                          resource_version=rv, timeout_seconds=1, _request_timeout=(5, 8))]
    assert seen[-1][0] == "DELETED" and not seen[-1][2].get("finalizers")
    recovered = [c for _, conds, _ in seen for c in conds if c.get("type") == "AllRecovered" and c["status"] == "True"]
    assert recovered, "recovered before it went"


def test_a_named_pod_that_does_not_exist_is_skipped_and_the_landing_check_says_so(
        fakekube: FakeKube, chaos_mesh: ChaosMeshController, custom: client.CustomObjectsApi) -> None:  # noqa: F811
    """Chaos Mesh's SelectPods skips a named pod it cannot find ("pod is not found, skip it")
    and says AllInjected of the rest; a fault that asked for both must not call that landed."""
    seed(fakekube, pod("web-1"))
    create(custom, network_chaos("slow", {"pods": {NS: ["web-1", "web-gone"]}}))
    obj = wait_for(all_injected(custom, "slow"), what="AllInjected")
    assert set(records(obj)) == {f"{NS}/web-1"}
    landing = injected(obj, ["web-1", "web-gone"])
    assert not landing.ok and "web-gone" in landing.evidence, landing
    assert injected(obj, ["web-1"]).ok


def test_selection_is_made_once_so_later_pods_are_never_injected(
        fakekube: FakeKube, chaos_mesh: ChaosMeshController, custom: client.CustomObjectsApi) -> None:  # noqa: F811
    seed(fakekube, pod("web-1"), pod("web-2", ip="10.1.0.2"))
    create(custom, network_chaos("slow", {"labelSelectors": {"app": "web"}}))
    wait_for(all_injected(custom, "slow"), what="AllInjected")
    seed(fakekube, pod("web-3", ip="10.1.0.3"))
    fakekube.store.delete(fakekube.store.resource(*PODS), NS, "web-1")
    seed(fakekube, pod("web-1", ip="10.1.0.9"))  # a replacement with the same name, a new uid
    time.sleep(0.4)
    obj = get(custom, "slow")
    assert set(records(obj)) == {f"{NS}/web-1", f"{NS}/web-2"}  # the deleted pod's record stays
    assert records(obj)[f"{NS}/web-1"]["phase"] == "Injected"
    assert conditions(obj)["AllInjected"] == "True"
    assert chaos_mesh.injected(NS, "slow") == {f"{NS}/web-2"}
    assert chaos_mesh.effects_on(NS, "web-3") == [] and chaos_mesh.effects_on(NS, "web-1") == []


def test_a_selector_matching_nothing_never_gets_all_injected(
        fakekube: FakeKube, chaos_mesh: ChaosMeshController, custom: client.CustomObjectsApi) -> None:  # noqa: F811
    seed(fakekube, pod("web-1"))
    create(custom, network_chaos("nowhere", {"labelSelectors": {"app": "nothing"}}))
    obj = wait_for(lambda: (o := get(custom, "nowhere")).get("status") and o, what="a status")
    time.sleep(0.3)
    obj = get(custom, "nowhere")
    assert conditions(obj) == {"Selected": "False", "AllInjected": "False", "AllRecovered": "False", "Paused": "False"}
    assert "containerRecords" not in obj["status"]["experiment"]
    events = client.CoreV1Api(custom.api_client).list_namespaced_event(NS).items
    assert "Failed to select targets: no pod is selected" in {e.message for e in events}
    # A matching pod that comes later is not picked up by itself: only another reconcile of the
    # object (any update to it) selects again — records/controller.go selects while records are nil.
    seed(fakekube, pod("late", labels={"app": "nothing"}, ip="10.1.0.7"))
    time.sleep(0.3)
    assert conditions(get(custom, "nowhere"))["Selected"] == "False"
    custom.patch_namespaced_custom_object(*CHAOS, NS, "networkchaos", "nowhere",
                                          {"metadata": {"labels": {"touched": "yes"}}})
    obj = wait_for(all_injected(custom, "nowhere"), what="AllInjected after a reconcile")
    assert set(records(obj)) == {f"{NS}/late"}


def test_a_not_running_pod_is_selected_but_never_injected(
        fakekube: FakeKube, chaos_mesh: ChaosMeshController, custom: client.CustomObjectsApi) -> None:  # noqa: F811
    """Selection does not look at phase (mode all takes "not ready or not running pods" too);
    the injection then fails with "pod not running" (chaos-mesh#4476)."""
    seed(fakekube, pod("web-1"), pod("done", phase="Succeeded", ip="10.1.0.5"))
    create(custom, network_chaos("stuck", {"labelSelectors": {"app": "web"}}))
    wait_for(lambda: records(get(custom, "stuck")).get(f"{NS}/web-1", {}).get("phase") == "Injected")
    obj = get(custom, "stuck")
    assert records(obj)[f"{NS}/done"]["phase"] == "Not Injected"
    assert records(obj)[f"{NS}/done"]["events"][-1] | {"timestamp": None} == {
        "type": "Failed", "operation": "Apply", "message": "pod not running", "timestamp": None}
    assert conditions(obj)["Selected"] == "True" and conditions(obj)["AllInjected"] == "False"


def test_duration_elapsed_recovers_but_keeps_the_object(
        fakekube: FakeKube, chaos_mesh: ChaosMeshController, custom: client.CustomObjectsApi) -> None:  # noqa: F811
    """Stop time = creationTimestamp (whole seconds) + duration, so "2s" ends 1-2 s after the
    create: long enough to see it injected first."""
    seed(fakekube, pod("web-1"))
    create(custom, network_chaos("brief", {"pods": {NS: ["web-1"]}}, duration="2s"))
    wait_for(all_injected(custom, "brief"), what="AllInjected")
    assert chaos_mesh.effects_on(NS, "web-1")
    started = time.monotonic()
    obj = wait_for(condition_true(custom, "brief", "AllRecovered"), timeout_s=4, what="AllRecovered")
    assert time.monotonic() - started <= 2.5
    assert conditions(obj) == {"Selected": "True", "AllInjected": "False", "AllRecovered": "True", "Paused": "False"}
    assert obj["status"]["experiment"]["desiredPhase"] == "Stop"
    record = records(obj)[f"{NS}/web-1"]
    assert (record["phase"], record["injectedCount"], record["recoveredCount"]) == ("Not Injected", 1, 1)
    assert chaos_mesh.injected(NS, "brief") == set() and chaos_mesh.effects_on(NS, "web-1") == []
    events = client.CoreV1Api(custom.api_client).list_namespaced_event(NS).items
    assert "TimeUp" in {e.reason for e in events}


def test_pause_recovers_and_resume_injects_again(
        fakekube: FakeKube, chaos_mesh: ChaosMeshController, custom: client.CustomObjectsApi) -> None:  # noqa: F811
    seed(fakekube, pod("web-1"))
    create(custom, network_chaos("held", {"pods": {NS: ["web-1"]}}))
    wait_for(all_injected(custom, "held"))
    pause = {"metadata": {"annotations": {"experiment.chaos-mesh.org/pause": "true"}}}
    custom.patch_namespaced_custom_object(*CHAOS, NS, "networkchaos", "held", pause)
    obj = wait_for(condition_true(custom, "held", "AllRecovered"))
    assert conditions(obj)["Paused"] == "True" and obj["status"]["experiment"]["desiredPhase"] == "Stop"
    assert chaos_mesh.effects_on(NS, "web-1") == []
    custom.patch_namespaced_custom_object(*CHAOS, NS, "networkchaos", "held",
                                          {"metadata": {"annotations": {"experiment.chaos-mesh.org/pause": "false"}}})
    obj = wait_for(all_injected(custom, "held"))
    assert records(obj)[f"{NS}/web-1"]["injectedCount"] == 2


def test_container_records_for_iochaos(
        fakekube: FakeKube, chaos_mesh: ChaosMeshController, custom: client.CustomObjectsApi) -> None:  # noqa: F811
    seed(fakekube, pod("web-1"))
    create(custom, {"apiVersion": "chaos-mesh.org/v1alpha1", "kind": "IOChaos", "metadata": {"name": "disk"},
                    "spec": {"action": "latency", "mode": "one", "selector": {"labelSelectors": {"app": "web"}},
                             "volumePath": "/models", "delay": "100ms", "percent": 50}}, "iochaos")
    wait_for(condition_true(custom, "disk", "AllInjected", "iochaos"))
    assert set(records(get(custom, "disk", "iochaos"))) == {f"{NS}/web-1/server"}
    effect, = chaos_mesh.effects_on(NS, "web-1")
    assert (effect["kind"], effect["delay"], effect["volumePath"]) == ("IOChaos", "100ms", "/models")


# --- Chaos Mesh: admission -----------------------------------------------------------------

def test_admission_refuses_what_the_schema_and_the_webhook_refuse() -> None:
    good = network_chaos("ok", {"pods": {NS: ["web-1"]}}, duration="30s", externalTargets=["store.svc"])
    assert admission(good) is None and validate(good) == []
    bandwidth = network_chaos("bw", {"pods": {NS: ["web-1"]}}, action="bandwidth",
                              bandwidth={"rate": "100kbps", "limit": 20971520, "buffer": 10000})
    assert admission(bandwidth) is None

    bad_mode = review(network_chaos("m", {"pods": {NS: ["web-1"]}}, mode="some"))
    assert bad_mode is not None and (bad_mode.code, bad_mode.reason) == (422, "Invalid")
    assert bad_mode.message == (
        'NetworkChaos.chaos-mesh.org "m" is invalid: spec.mode: Unsupported value: "some": supported values: '
        '"one", "all", "fixed", "fixed-percent", "random-max-percent"')

    no_value = review(network_chaos("f", {"pods": {NS: ["web-1"]}}, mode="fixed"))
    assert no_value is not None and (no_value.code, no_value.reason) == (403, "Forbidden")
    assert no_value.message == ('admission webhook "vnetworkchaos.kb.io" denied the request: Spec.PodSelector.value: '
                                'Invalid value: "": parse value field error:strconv.Atoi: parsing "": invalid syntax')
    assert "Must be (0,100] with mode:fixed-percent" in admission(
        network_chaos("p", {"pods": {NS: ["a"]}}, mode="fixed-percent", value="150"))

    no_unit = admission(network_chaos("b", {"pods": {NS: ["web-1"]}}, action="bandwidth",
                                      bandwidth={"rate": "10", "limit": 1, "buffer": 1}))
    assert no_unit is not None and no_unit.endswith(
        'Spec.TcParameter.Bandwidth.Rate: Invalid value: "10": parse rate field error:invalid unit')
    zero_limit = review(network_chaos("z", {"pods": {NS: ["web-1"]}}, action="bandwidth",
                                      bandwidth={"rate": "1mbps", "limit": 0, "buffer": 1}))
    assert zero_limit is not None and zero_limit.code == 422
    assert "spec.bandwidth.limit in body should be greater than or equal to 1" in zero_limit.message
    assert "spec.bandwidth.rate: Required value" in admission(
        network_chaos("r", {"pods": {NS: ["a"]}}, action="bandwidth", bandwidth={"limit": 1, "buffer": 1}))
    assert 'time: unknown unit "x" in duration "5x"' in admission(
        network_chaos("d", {"pods": {NS: ["a"]}}, duration="5x"))
    assert "`from` and `both` direction cannot be used when targets is empty" in admission(
        network_chaos("dir", {"pods": {NS: ["a"]}}, direction="both"))
    assert "spec.action: Unsupported value" in admission(network_chaos("a", {"pods": {NS: ["a"]}}, action="slow"))


def test_an_object_admission_refuses_is_never_created(
        fakekube: FakeKube, chaos_mesh: ChaosMeshController, custom: client.CustomObjectsApi) -> None:  # noqa: F811
    seed(fakekube, pod("web-1"))
    with pytest.raises(ApiException) as info:
        create(custom, network_chaos("bad", {"pods": {NS: ["web-1"]}}, mode="fixed"))  # fixed needs a value
    assert info.value.status in (403, 422) and "parse value field error" in info.value.body
    assert not fakekube.exists("chaos-mesh.org", "v1alpha1", "networkchaos", "bad", NS)
    time.sleep(0.2)
    assert chaos_mesh.effects_on(NS, "web-1") == []


# --- EndpointSlices ------------------------------------------------------------------------

@pytest.fixture
def slices(fakekube: FakeKube) -> Iterator[EndpointSliceController]:  # noqa: F811
    with EndpointSliceController(fakekube, NS, "web", {"app": "web"}, port=8000, port_name="http") as controller:
        yield controller
    assert controller.errors == []


def listed(kube_client: client.ApiClient) -> list[client.V1EndpointSlice]:  # noqa: F811
    return client.DiscoveryV1Api(kube_client).list_namespaced_endpoint_slice(
        NS, label_selector="kubernetes.io/service-name=web").items


def endpoint_of(kube_client: client.ApiClient, name: str) -> client.V1Endpoint | None:  # noqa: F811
    return next((ep for s in listed(kube_client) for ep in s.endpoints or [] if ep.target_ref.name == name), None)


def flags(ep: client.V1Endpoint | None) -> tuple[bool, bool, bool] | None:
    return None if ep is None else (ep.conditions.ready, ep.conditions.serving, ep.conditions.terminating)


def test_endpointslice_lists_pods_with_an_ip(
        fakekube: FakeKube, slices: EndpointSliceController, kube_client: client.ApiClient) -> None:  # noqa: F811
    seed(fakekube, pod("web-1"), pod("web-2", ip=None), pod("web-3", ip="10.1.0.3", ready=False),
         pod("other", labels={"app": "db"}, ip="10.1.0.4"), pod("ghost", ip="10.1.0.5", node="node-gone"))
    wait_for(lambda: endpoint_of(kube_client, "web-3"), what="web-3 listed")
    (s,) = listed(kube_client)
    assert s.address_type == "IPv4" and s.metadata.name.startswith("web-")
    assert s.metadata.labels["endpointslice.kubernetes.io/managed-by"] == "endpointslice-controller.k8s.io"
    assert [(p.name, p.port, p.protocol) for p in s.ports] == [("http", 8000, "TCP")]
    assert [ep.target_ref.name for ep in s.endpoints] == ["web-1", "web-3"]  # no IP, no Node: not listed
    web1 = s.endpoints[0]
    uid = fakekube.get(*PODS, "web-1", NS)["metadata"]["uid"]
    assert (web1.addresses, web1.node_name, web1.zone, web1.target_ref.kind, web1.target_ref.uid) == (
        ["10.1.0.1"], "node-a", "z1", "Pod", uid)
    assert flags(web1) == (True, True, False) and flags(s.endpoints[1]) == (False, False, False)


def test_endpointslice_conditions_follow_readiness_and_termination(
        fakekube: FakeKube, slices: EndpointSliceController, kube_client: client.ApiClient) -> None:  # noqa: F811
    seed(fakekube, pod("web-1"), pod("web-2", ip="10.1.0.2"))
    wait_for(lambda: flags(endpoint_of(kube_client, "web-2")) == (True, True, False))
    store, res = fakekube.store, fakekube.store.resource(*PODS)

    def unready(p: dict[str, Any]) -> dict[str, Any]:
        p["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
        return p

    started = time.monotonic()
    store.update(res, NS, "web-1", unready)
    wait_for(lambda: flags(endpoint_of(kube_client, "web-1")) == (False, False, False), what="unready")
    assert time.monotonic() - started < 1.0

    def terminating(p: dict[str, Any]) -> dict[str, Any]:
        p["metadata"]["deletionTimestamp"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        p["metadata"]["deletionGracePeriodSeconds"] = 30
        return p

    if hasattr(store, "delete_gracefully"):  # the store's graceful DELETE, where it has one
        store.delete_gracefully(res, NS, "web-2", 30)
    else:
        store.update(res, NS, "web-2", terminating)
    # still Ready: serving, but no longer ready
    wait_for(lambda: flags(endpoint_of(kube_client, "web-2")) == (False, True, True), what="terminating")
    store.delete(res, NS, "web-2")
    wait_for(lambda: endpoint_of(kube_client, "web-2") is None, what="web-2 gone")
    assert endpoint_of(kube_client, "web-1") is not None


def test_endpointslice_placeholder_when_nothing_is_selected(
        fakekube: FakeKube, slices: EndpointSliceController, kube_client: client.ApiClient) -> None:  # noqa: F811
    (placeholder,) = wait_for(lambda: listed(kube_client), what="a placeholder")
    assert placeholder.endpoints == [] and not placeholder.ports
    seed(fakekube, pod("web-1"))
    wait_for(lambda: endpoint_of(kube_client, "web-1"))
    (s,) = listed(kube_client)  # the placeholder made way for a slice with ports
    assert s.metadata.name != placeholder.metadata.name and s.ports[0].port == 8000


def test_endpointslice_batch_period_delays_the_update(
        fakekube: FakeKube, kube_client: client.ApiClient) -> None:  # noqa: F811
    seed(fakekube, pod("web-1"))
    with EndpointSliceController(fakekube, NS, "web", {"app": "web"}, port=8000, batch_period_s=0.3) as controller:
        started = time.monotonic()
        wait_for(lambda: endpoint_of(kube_client, "web-1"))
        assert time.monotonic() - started >= 0.25
    assert controller.errors == []
