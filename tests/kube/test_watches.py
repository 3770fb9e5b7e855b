"""The Kubernetes target follows the cluster by watches, not by a LIST per tick.

Against the fake API server with deploy/'s RBAC for the runner: the engine's questions
(replicas, the steady state, desired replicas, the LB view, the autoscaling view), asked as
often as a run asks them, send no request at all once the target has started; a change
made through the API reaches the answers by its watch event; a reconnect resumes from a
bookmark without a LIST, and one from a compacted version lists again (410); a pod
relabelled out of the selector leaves the replicas, as the API server's DELETED to a
selector's watch says; closing the target ends its watches at once.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from inferchaos.targets.kubernetes import Connection, KubeSettings, KubeTarget
from tests.fakekube import FakeKube
from tests.support.kubeseed import CONTEXT, NS, RUNNER_TOKEN, kubeconfig, runner_policy, seed
from tests.support.waiting import wait_for

PLACEMENT = {"node-a": ["ref-0"], "node-b": ["ref-1"], "node-c": ["ref-2"]}
#: what the target watches: pods, EndpointSlices, Deployments, StatefulSets, and (asked for
#: the autoscaling view) HPAs and, once an HPA names our Deployment, KEDA's ScaledObjects.
WATCHED = {"pods", "endpointslices", "deployments", "statefulsets", "horizontalpodautoscalers", "scaledobjects"}


@pytest.fixture
def fake():
    with FakeKube(**runner_policy(NS)) as server:
        yield server


def started(fake: FakeKube, tmp: Path) -> KubeTarget:
    """Not started yet: `with` starts it."""
    uid = seed(fake, PLACEMENT)
    fake.add("autoscaling", "v2", "horizontalpodautoscalers", {
        "metadata": {"name": "keda-hpa-ref", "namespace": NS},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ref"},
                 "minReplicas": 1, "maxReplicas": 6},
        "status": {"desiredReplicas": 3, "currentReplicas": 3}}, NS)
    fake.add("keda.sh", "v1alpha1", "scaledobjects", {
        "metadata": {"name": "ref", "namespace": NS}, "spec": {"scaleTargetRef": {"name": "ref"}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Active", "status": "False"}]}}, NS)
    return target_of(fake, tmp, uid)


def target_of(fake: FakeKube, tmp: Path, uid: str) -> KubeTarget:
    settings = KubeSettings(NS, "app=ref", "http://endpoint.invalid",
                            kubeconfig=str(kubeconfig(fake, tmp, token=RUNNER_TOKEN)),
                            allow_clusters=(uid,), allow_namespaces=(NS,))
    return KubeTarget(settings, Connection(settings.kubeconfig, CONTEXT))


def plural(path: str) -> str:
    return path.rstrip("/").split("/")[-1]


def watches(fake: FakeKube) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in fake.requests(method="GET"):
        if r.query.get("watch") == "true":
            out[plural(r.path)] = out.get(plural(r.path), 0) + 1
    return out


def lists(fake: FakeKube) -> list[str]:
    return [plural(r.path) for r in fake.requests(method="GET")
            if r.query.get("watch") != "true" and plural(r.path) in WATCHED]


def ask_as_a_run_does(target: KubeTarget, seconds: float) -> None:
    """The engine's tick (0.25 s: replicas, desired) with the autoscaling probe's (0.25 s)
    and the failover view's reads between them."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        target.replicas(), target.desired_replicas(), target.unsteady(), target.servers(), target.autoscaling()
        time.sleep(0.05)


def test_a_started_target_answers_a_run_without_listing(fake, tmp_path):
    with started(fake, tmp_path) as target:
        assert target.autoscaling()["scaled_object"] == {"name": "ref", "ready": "True", "active": "False"}
        wait_for(lambda: set(watches(fake)) == WATCHED, 10, "a watch open on every resource followed")
        listed_at_start = lists(fake)
        fake.clear_requests()
        ask_as_a_run_does(target, 3.0)
        assert target.unsteady() is None and target.desired_replicas() == 3
        sent = [(r.method, r.path, r.query) for r in fake.requests()]
        assert sent == [], f"{len(sent)} requests while the run asked: {sent[:5]}"
    assert sorted(listed_at_start) == sorted(WATCHED), "one LIST each, to start from"
    assert [a for a in fake.authorizations if not a.allowed] == [], "deploy/'s Role grants the watches"


def test_watch_requests_are_long_and_ask_for_bookmarks(fake, tmp_path):
    with started(fake, tmp_path) as target:
        target.autoscaling()
        wait_for(lambda: set(watches(fake)) == WATCHED, 10, "a watch open on every resource followed")
        for r in fake.requests(method="GET"):
            if r.query.get("watch") == "true":
                # client-go's reflector: 5 min x [1, 2), bookmarks allowed, from the list's version
                assert 300 <= int(r.query["timeoutSeconds"]) < 600, r
                assert r.query["allowWatchBookmarks"] == "true" and r.query["resourceVersion"] not in ("", "0"), r


def test_a_change_through_the_api_reaches_the_answers_by_its_event(fake, tmp_path):
    with started(fake, tmp_path) as target:
        wait_for(lambda: {"deployments", "pods"} <= set(watches(fake)), 10, "the watches open")
        fake.clear_requests()
        deployments = fake.store.resource("apps", "v1", "deployments")

        def scale_to_4(d: dict) -> dict:
            d["spec"]["replicas"] = 4
            return d
        fake.store.update(deployments, NS, "ref", scale_to_4)
        wait_for(lambda: target.desired_replicas() == 4, 5, "the Deployment's new count")
        assert target.unsteady() == "3/4 pods ready"
        assert lists(fake) == []


def test_a_pod_relabelled_out_of_the_selector_leaves_the_replicas(fake, tmp_path):
    with started(fake, tmp_path) as target:
        wait_for(lambda: "pods" in watches(fake), 10, "the pod watch open")
        pods = fake.store.resource("", "v1", "pods")

        def quarantine(p: dict) -> dict:
            p["metadata"]["labels"]["app"] = "quarantine"
            return p
        fake.store.update(pods, NS, "ref-1", quarantine)
        wait_for(lambda: "ref-1" not in {p.name for p in target.replicas()}, 5, "ref-1 out of the replicas")
        assert [p.phase for p in target.replica_records() if p.name == "ref-1"] == ["dead"]
        assert target.unsteady() == "2/3 pods ready"


def test_a_reconnect_resumes_from_a_bookmark_and_lists_only_after_410(fake, tmp_path):
    fake.bookmark_every_s = 0.3
    with started(fake, tmp_path) as target:
        wait_for(lambda: "pods" in watches(fake), 10, "the pod watch open")
        # a change the pod watch is not told of moves the version on; its bookmark carries it
        fake.add("", "v1", "configmaps", {"metadata": {"name": "unrelated", "namespace": NS}}, NS)
        time.sleep(1.0)  # bookmarks every 0.3 s
        fake.expire_watches()
        fake.clear_requests()
        fake.end_watches()
        wait_for(lambda: "pods" in watches(fake), 10, "the pod watch reopened")
        time.sleep(0.5)
        assert target.cache.relists == 0 and lists(fake) == [], "resumed from the bookmark's version"

    fake.bookmark_every_s = 60.0
    with started_again(fake, tmp_path) as target:
        wait_for(lambda: "pods" in watches(fake), 10, "the pod watch open")
        fake.add("", "v1", "configmaps", {"metadata": {"name": "unrelated-2", "namespace": NS}}, NS)
        fake.expire_watches()
        fake.end_watches()
        wait_for(lambda: target.cache.relists >= 1, 10, "a LIST after 410 Expired")
        assert target.unsteady() is None


def started_again(fake: FakeKube, tmp: Path) -> KubeTarget:
    uid = fake.store.get(fake.store.resource("", "v1", "namespaces"), "", "kube-system")["metadata"]["uid"]
    fake.clear_requests()
    return target_of(fake, tmp, uid)


def test_closing_the_target_ends_its_watches_at_once(fake, tmp_path):
    before = {t.ident for t in threading.enumerate()}
    target = started(fake, tmp_path).start()
    target.autoscaling()
    wait_for(lambda: set(watches(fake)) == WATCHED, 10, "a watch open on every resource followed")
    t0 = time.monotonic()
    target.close()
    took = time.monotonic() - t0
    left = [t.name for t in threading.enumerate() if t.ident not in before and t.name.endswith("-watch")]
    assert left == [] and took < 3.0, (left, took)


def test_a_pod_dies_when_its_containers_end_not_when_its_grace_would(fake, tmp_path):
    """deletionTimestamp is the delete's time plus the grace period (ObjectMeta: "the time
    at which this resource will be deleted"), a deadline: the pod dies when the kubelet says
    its container finished, or, removed without a word, when its DELETED is seen."""
    pods = fake.store.resource("", "v1", "pods")
    with started(fake, tmp_path) as target:
        wait_for(lambda: "pods" in watches(fake), 10, "the pod watch open")
        asked = time.time()
        fake.store.delete_gracefully(pods, NS, "ref-0", 30)
        wait_for(lambda: {p.name: p.phase for p in target.replica_records()}["ref-0"] == "dead", 5, "ref-0 ending")
        ending = {p.name: p for p in target.replica_records()}["ref-0"]
        assert ending.died_at is None, "its container still runs the 30-s grace"

        finished = asked + 1.5

        def container_ended(p: dict) -> dict:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(finished))
            p["status"]["containerStatuses"][0]["state"] = {"terminated": {"exitCode": 0, "finishedAt": stamp}}
            return p
        fake.store.update(pods, NS, "ref-0", container_ended)
        wait_for(lambda: {p.name: p for p in target.replica_records()}["ref-0"].died_at is not None, 5,
                 "the kubelet's account of the end")
        died = {p.name: p for p in target.replica_records()}["ref-0"].died_at
        assert died == int(finished), (died, finished)
        fake.store.delete(pods, NS, "ref-0")
        wait_for(lambda: "ref-0" not in {p.name for p in target.replicas()}, 5, "ref-0 gone")
        assert {p.name: p for p in target.replica_records()}["ref-0"].died_at == int(finished)

        before = time.time()
        fake.store.delete(pods, NS, "ref-1")  # removed with no word from a kubelet
        wait_for(lambda: "ref-1" not in {p.name for p in target.replicas()}, 5, "ref-1 gone")
        died = {p.name: p for p in target.replica_records()}["ref-1"].died_at
        assert died is not None and before <= died <= time.time()


def test_the_target_follows_a_cluster_over_https_with_its_ca_and_token(tmp_path):
    """As on a real API server: TLS verified against the kubeconfig's CA, the bearer token sent."""
    with FakeKube(tls=True, **runner_policy(NS)) as server:
        uid = seed(server, PLACEMENT)
        config = tmp_path / "kubeconfig"
        config.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: "{server.url}", certificate-authority: {server.ca_path}}}}}]
users: [{{name: runner, user: {{token: {RUNNER_TOKEN}}}}}]
contexts: [{{name: {CONTEXT}, context: {{cluster: fake, user: runner}}}}]
current-context: {CONTEXT}
""")
        assert server.url.startswith("https://")
        settings = KubeSettings(NS, "app=ref", "http://endpoint.invalid", kubeconfig=str(config),
                                allow_clusters=(uid,), allow_namespaces=(NS,))
        with KubeTarget(settings, Connection(settings.kubeconfig, CONTEXT)) as target:
            assert target.unsteady() is None and target.desired_replicas() == 3
            wait_for(lambda: "pods" in watches(server), 10, "the pod watch open over TLS")
        assert {a.user for a in server.authorizations} == {"system:serviceaccount:inferchaos:inferchaos-runner"}


def test_a_server_that_ends_every_watch_at_once_is_not_hammered(fake, tmp_path):
    """A proxy in front of the API server that closes every stream at once: the informer backs
    off (0.2 s doubling to 5 s) instead of reconnecting in a hot loop."""
    with started(fake, tmp_path) as target:
        wait_for(lambda: "pods" in watches(fake), 10, "the pod watch open")
        fake.clear_requests()
        stop = threading.Event()

        def close_every_stream() -> None:
            while not stop.is_set():
                fake.end_watches()
                time.sleep(0.01)
        closer = threading.Thread(target=close_every_stream, daemon=True)
        closer.start()
        try:
            time.sleep(4.0)
        finally:
            stop.set()
            closer.join(5)
        reopened = watches(fake).get("pods", 0)
        assert 1 <= reopened <= 10, f"{reopened} pod watches in 4 s"
        assert target.unsteady() is None
