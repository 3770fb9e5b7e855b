"""deploy/'s RBAC, derived from what the code calls rather than written down beside it.

One representative run, in-process and against the fake API server (tests/fakekube) with
deploy/'s Roles and ClusterRoles enforced for the runner's ServiceAccount: the target starts
(identity, opt-in, pod and EndpointSlice watches), the report's inventory and the autoscaling
view are read, every Kubernetes executor of the catalogue (from the registry, so a
new fault without a case here fails) is planned, injected, read back until it landed and
reverted -- each through its real undo steps -- and a hang left behind by a runner whose pod is
gone is recovered by `inferchaos recover --expired` (the runs' ledgers, then the sweep). Pods
are real processes under the fake kubelet, NetworkChaos is answered by the fake Chaos Mesh, and
exec is authorised as a 1.35+ API server does (get, then create).

What the API server was asked is its authorisation log. The tests then check, against every
RBAC document under deploy/: nothing was refused; every verb of every rule was used on its
resource (and every resourceName on its object), so no rule grants what the code never calls;
a name-addressed rule whose requests all named an object deploy/ itself defines carries
resourceNames; and what a run without the spot-faults component makes is allowed by the base
alone. A Deployment's image cannot be changed with the runner's token; the scale the pipeline
fault needs can.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from inferchaos.faults.catalogue import CATALOGUE, lookup
from inferchaos.faults.registry import executor_class, kinds_of
from inferchaos.faults.ledger import Ledger
from inferchaos.targets.kubernetes import KubeSettings, KubeTarget
from tests.support.waiting import wait_for
from tests.fakekube import FakeKube
from tests.fakekube.chaosmesh import ChaosMeshController
from tests.fakekube.cluster import FakeCluster
from tests.fakekube.endpointslices import EndpointSliceController
from tests.fakekube.rbac import Authorization, Policy, service_account
from tests.support.kubeseed import identify_and_opt_in
from tests.support.kubeseed import kubeconfig as seeded_kubeconfig

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
NS, CONTEXT, TOKEN = "ml", "fake-staging", "runner-token"
RUNNER = service_account("inferchaos", "inferchaos-runner")
RBAC_KINDS = ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "ServiceAccount")
#: the verbs a rule's resourceNames can narrow (a list, watch or create names no object).
NAMED_VERBS = frozenset({"get", "update", "patch", "delete"})
HOG_STATUS_JSON = '{"held": 1073741824, "free": 0}'


# ----------------------------------------------------------------------------- deploy/'s RBAC
def manifest_files() -> list[Path]:
    """Every manifest under deploy/ but kustomizations, patches and the hand-applied examples."""
    skip = {"kustomization.yaml"}
    patches = set()
    for k in DEPLOY.rglob("kustomization.yaml"):
        for doc in yaml.safe_load_all(k.read_text()):
            patches |= {(k.parent / p["path"]).resolve() for p in (doc or {}).get("patches", []) if "path" in p}
    return sorted(p for p in DEPLOY.rglob("*.yaml") if p.name not in skip and p.resolve() not in patches
                  and DEPLOY / "examples" not in p.parents)


def rbac_documents(files: Iterable[Path]) -> list[dict[str, Any]]:
    return [d for p in files for d in yaml.safe_load_all(p.read_text()) if isinstance(d, dict)
            and d.get("kind") in RBAC_KINDS]


def base_files() -> list[Path]:
    return [p for p in manifest_files() if DEPLOY / "base" in p.parents]


def deploy_object_names() -> set[str]:
    """The names of the objects deploy/ itself defines (a Deployment, a Service...)."""
    return {d["metadata"]["name"] for p in manifest_files() for d in yaml.safe_load_all(p.read_text())
            if isinstance(d, dict) and d.get("kind") not in RBAC_KINDS and (d.get("metadata") or {}).get("name")}


@dataclass(frozen=True)
class Grant:
    """One verb on one resource (one object, with resourceNames) that a binding gives the runner."""

    binding: str  # "RoleBinding ml/inferchaos-runner -> Role inferchaos-runner"
    namespace: str  # "" for a ClusterRoleBinding: everywhere
    verb: str
    group: str
    resource: str  # "pods/exec"
    name: str | None  # a resourceName, or None: any object

    def covers(self, a: Authorization) -> bool:
        return (a.verb == self.verb and a.group == self.group and a.resource == self.resource
                and (not self.namespace or a.namespace == self.namespace)
                and (self.name is None or a.name == self.name))

    def __str__(self) -> str:
        what = f"{self.resource}.{self.group}" if self.group else self.resource
        return f"{self.verb} {what}" + (f" [{self.name}]" if self.name else "") + f" ({self.binding})"


def grants(policy: Policy, user: str = RUNNER) -> list[Grant]:
    """Every (verb, resource, object) the policy's bindings give `user`, rule by rule."""
    out = []
    for b in policy.bindings:
        if not any(s.kind == "ServiceAccount" and service_account(s.namespace or b.namespace, s.name) == user
                   for s in b.subjects):
            continue
        role = policy._role(b)
        assert role is not None, f"{b.kind} {b.name} refers to a {b.role_kind} {b.role_name} deploy/ does not define"
        label = f"{b.kind} {(b.namespace + '/') if b.namespace else ''}{b.name} -> {b.role_kind} {b.role_name}"
        for rule in role.rules:
            for verb in sorted(rule.verbs):
                for group in sorted(rule.api_groups):
                    for resource in sorted(rule.resources):
                        for name in sorted(rule.resource_names) or [None]:
                            out.append(Grant(label, b.namespace, verb, group, resource, name))
    return out


def load_policy(files: Iterable[Path]) -> Policy:
    # Roles and RoleBindings land in the namespace the kustomization names; here, the target's
    return Policy.from_documents(rbac_documents(files), namespace_override=NS)


# ----------------------------------------------------------------------------- the representative run
@dataclass
class Run:
    authorizations: list[Authorization]
    #: index in `authorizations` where each phase began: name -> (start, end)
    phases: dict[str, tuple[int, int]]
    ran: list[str]

    def in_phase(self, *names: str) -> list[Authorization]:
        return [a for n in names for a in self.authorizations[slice(*self.phases[n])]]


#: how each Kubernetes fault is built for the run: cheap parameters, one pod each.
CASES: dict[str, dict[str, Any]] = {
    "spot_reclamation": {"notice_s": 1.0},
    "gpu_oom": {"leave": "0"},
    "model_load_stall": {"stall_s": 5.0},
    "pipeline_lag": {"mode": "both", "read_latency_ms": 500.0},
    "dependency_latency": {"dependency": "feature_store", "latency_ms": 100.0},
    "replica_crash": {},
    "replica_hang": {},
    "replica_restart": {},
}


def _seed(fake: FakeKube) -> str:
    """What deploy/ and a cluster give the runner to work on: kube-system (the identity), the
    opted-in namespace, the model store's Service and pod, an HPA and a KEDA ScaledObject."""
    uid = identify_and_opt_in(fake, NS)
    fake.add("", "v1", "services", {"metadata": {"name": "ref", "namespace": NS},
                                    "spec": {"selector": {"app": "ref"}, "ports": [{"port": 8000}]}}, NS)
    fake.add("", "v1", "services", {"metadata": {"name": "model-store", "namespace": NS},
                                    "spec": {"selector": {"app": "model-store"}, "ports": [{"port": 8001}]}}, NS)
    fake.add("", "v1", "pods", {"metadata": {"name": "model-store-0", "namespace": NS, "labels": {"app": "model-store"}},
                                "spec": {"nodeName": "node-a", "containers": [{"name": "store", "image": "s:1"}]},
                                "status": {"phase": "Running", "podIP": "10.0.1.1"}}, NS)
    fake.add("autoscaling", "v2", "horizontalpodautoscalers", {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "keda-hpa-ref", "namespace": NS},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ref"},
                 "minReplicas": 3, "maxReplicas": 6},
        "status": {"desiredReplicas": 3, "currentReplicas": 3}}, NS)
    fake.add("keda.sh", "v1alpha1", "scaledobjects", {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "ref", "namespace": NS},
        "spec": {"scaleTargetRef": {"name": "ref"}}, "status": {"conditions": []}}, NS)
    return uid


def _exercise(fake: FakeKube, cluster: FakeCluster, uid: str, tmp: Path) -> Run:
    from inferchaos.cli import build_parser
    from inferchaos.cli.recover import cmd_recover
    from inferchaos.faults.kubernetes.base import RUNNER_POD_ENV
    from inferchaos.targets.inventory import inventory_of
    from inferchaos.watch_kube import take

    kubeconfig = seeded_kubeconfig(fake, tmp, token=TOKEN)
    settings = KubeSettings(NS, cluster.selector, "http://127.0.0.1:9", kubeconfig=str(kubeconfig),
                            context=CONTEXT, allow_clusters=(uid,), allow_namespaces=(NS,),
                            pipeline_deployment="feature-pipeline", server_process="container_server.py",
                            dependencies={"model_store": "model-store", "feature_store": "feature-store"},
                            allow_shared_nodes=False, expire_after_s=900, service="ref")
    phases: dict[str, tuple[int, int]] = {}
    ran: list[str] = []

    def phase(name: str, action: Callable[[], Any]) -> Any:
        start = len(fake.authorizations)
        try:
            return action()
        finally:
            phases[name] = (start, len(fake.authorizations))

    target = phase("start", lambda: KubeTarget(settings).start().tie())
    try:
        phase("steady", lambda: target.wait_steady(20))
        phase("probes", lambda: (inventory_of(target), target.autoscaling(), target.desired_replicas(),
                                 take(target, Ledger(tmp / "watch.jsonl"))))

        def one_fault(name: str) -> None:
            fault = lookup(name).on(target, ledger=Ledger(tmp / f"{name}.jsonl"), **CASES[name])
            assert fault.plan(), f"{name}: an empty plan"
            if name == "spot_reclamation":  # a PDB refuses the eviction: the deadline deletes the pod
                for p in target.replicas():
                    fake.set_eviction(NS, p.name, status=429, message="Cannot evict pod as it would violate the "
                                      "pod's disruption budget.")
            fault.inject()
            try:
                wait_for(lambda: fault.landed().ok, fault.land_within_s + 10, f"{name} to land")
            finally:
                fault.revert()
            assert fault.ledger.open_entries() == [], f"{name}: its ledger entry is still open after revert"
            ran.append(name)

        for name in CASES:
            phase(name, lambda name=name: (target.wait_steady(30), one_fault(name)))
        target.wait_steady(30)

        # a runner killed mid-hang: its pod is gone, its ledger ConfigMap says what is applied
        def left_behind() -> None:
            before = os.environ.get(RUNNER_POD_ENV)
            os.environ[RUNNER_POD_ENV] = "inferchaos-nightly-gone"
            try:
                hang = lookup("replica_hang").on(target, ledger=Ledger(tmp / "lost.jsonl"))
                hang.inject()
                wait_for(lambda: hang.landed().ok, 15, "the hang to land")
            finally:
                if before is None:
                    del os.environ[RUNNER_POD_ENV]
                else:
                    os.environ[RUNNER_POD_ENV] = before

        phase("left_behind", left_behind)

        def recover() -> None:
            args = build_parser().parse_args([
                "recover", "--expired", "--ledger", str(tmp / "recover.jsonl"), "--kubeconfig", str(kubeconfig),
                "--kube-context", CONTEXT, "--allow-cluster", uid, "--namespace", NS, "--allow-namespace", NS])
            assert cmd_recover(args) == 0, "recover --expired failed"

        phase("recover", recover)
        wait_for(lambda: target.unsteady() is None, 30, "the recovered pod serving again")
    finally:
        target.close()
    return Run(list(fake.authorizations), phases, ran)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("rbac")
    with FakeKube(policy=load_policy(manifest_files()), tokens={TOKEN: RUNNER}) as fake:
        cluster = FakeCluster(fake, namespace=NS).seed()
        uid = _seed(fake)
        # no GPU here: the hog's start and its status file are answered at the exec boundary
        # (the exec itself is authorised and sent as ever; only what runs in the pod differs)
        from inferchaos.faults.kubernetes.gpu import HOG_STATUS

        cluster.kubelet.intercept(lambda e: e.argv[:2] == ("sh", "-c") and "inferchaos.faults.gpu_hog" in e.argv[2],
                                  lambda e: ("4242\n", "", 0))
        cluster.kubelet.intercept(lambda e: e.argv == ("cat", HOG_STATUS), lambda e: (HOG_STATUS_JSON, "", 0))
        with cluster.start(), ChaosMeshController(fake), \
                EndpointSliceController(fake, NS, "ref", {"app": "ref"}, port=cluster.serving_port, port_name="http"):
            yield _exercise(fake, cluster, uid, tmp)


# ----------------------------------------------------------------------------- what the checks are
def refused(authorizations: Iterable[Authorization]) -> list[Authorization]:
    return [a for a in authorizations if not a.allowed]


def unused(granted: Iterable[Grant], authorizations: list[Authorization]) -> list[Grant]:
    """Grants no request was authorised under: rights the code never uses."""
    ok = [a for a in authorizations if a.allowed and a.user == RUNNER]
    return [g for g in granted if not any(g.covers(a) for a in ok)]


def unnarrowed(granted: Iterable[Grant], authorizations: list[Authorization], fixed: set[str]) -> dict[str, set[str]]:
    """Name-addressable grants without resourceNames whose every request named one of `fixed`
    (objects deploy/ defines): they could name those objects and nothing else."""
    ok = [a for a in authorizations if a.allowed and a.user == RUNNER]
    out = {}
    for g in granted:
        if g.name is not None or g.verb not in NAMED_VERBS:
            continue
        names = {a.name for a in ok if g.covers(a)}
        if names and names <= fixed:
            out[str(g)] = names
    return out


def called(authorizations: Iterable[Authorization]) -> list[str]:
    """The API calls, one line each: verb, resource, and where (namespaced or cluster scope)."""
    seen = sorted({(a.resource, a.group, a.verb, "namespaced" if a.namespace else "cluster")
                   for a in authorizations})
    return [f"{verb:<7} {resource}{'.' + group if group else ''} ({scope})" for resource, group, verb, scope in seen]


# ----------------------------------------------------------------------------- tests
def test_every_kubernetes_fault_was_exercised(run: Run) -> None:
    # the surge acts on the endpoint alone (faults/endpoint/): it makes no API call to authorise
    on_the_api = {n for n in CATALOGUE if "kubernetes" in kinds_of(n)
                  and executor_class(n, "kubernetes").__module__.startswith("inferchaos.faults.kubernetes")}
    assert set(CASES) == on_the_api, "a Kubernetes fault without a case here: add it to CASES"
    assert run.ran == list(CASES)


def test_nothing_the_code_asked_was_refused(run: Run) -> None:
    assert refused(run.authorizations) == [], "\n".join(called(run.authorizations))
    assert {a.user for a in run.authorizations} == {RUNNER}


def test_the_rbac_grants_exactly_what_the_code_calls(run: Run) -> None:
    """No verb, resource or resourceName the run never used: every rule is a call the code makes."""
    granted = grants(load_policy(manifest_files()))
    assert granted, "deploy/ grants the runner nothing"
    for doc in rbac_documents(manifest_files()):
        for rule in doc.get("rules") or []:
            assert "*" not in [*rule.get("verbs", []), *rule.get("resources", []), *rule.get("apiGroups", [])], \
                f"{doc['kind']} {doc['metadata']['name']}: a wildcard grants what nobody derived: {rule}"
    extra = unused(granted, run.authorizations)
    assert extra == [], ("granted, never called:\n  " + "\n  ".join(map(str, extra))
                         + "\nwhat the code called:\n  " + "\n  ".join(called(run.authorizations)))


def test_name_addressed_rules_name_the_objects(run: Run) -> None:
    """Where every get/update/patch/delete named an object deploy/ defines (the pipeline
    Deployment, the model store's Service), the rule carries resourceNames."""
    granted = grants(load_policy(manifest_files()))
    fixed = deploy_object_names()
    assert {"feature-pipeline", "model-store", "reference-server"} <= fixed
    assert unnarrowed(granted, run.authorizations, fixed) == {}


def test_without_the_spot_component_the_base_alone_allows_the_rest(run: Run) -> None:
    """The nightly run without spot faults has only base/: everything but spot reclamation is
    allowed by it, bar the node list of the sweep and the inventory, which the code reads as
    "spot faults not enabled" (no node was ever marked) and "GPU types unknown"."""
    base = load_policy(base_files())
    rest = [p for p in run.phases if p != "spot_reclamation"]
    denied = {(a.verb, a.resource, a.namespace) for a in run.in_phase(*rest)
              if not base.allows(a.user, a.verb, a.group, *_split(a.resource), namespace=a.namespace, name=a.name)}
    assert denied <= {("list", "nodes", "")}, denied
    spot = [a for a in run.in_phase("spot_reclamation")
            if not base.allows(a.user, a.verb, a.group, *_split(a.resource), namespace=a.namespace, name=a.name)]
    assert {(a.verb, a.resource) for a in spot} >= {("create", "pods/eviction"), ("delete", "pods"),
                                                     ("update", "nodes")}, "the component is what spot needs"


def _split(resource: str) -> tuple[str, str]:
    name, _, sub = resource.partition("/")
    return name, sub


def test_the_checks_fail_on_a_planted_extra_right(run: Run) -> None:
    """The comparison itself can fail: a planted verb, a planted resource and a planted
    name-addressed rule without resourceNames are each reported."""
    docs = rbac_documents(manifest_files())
    role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "inferchaos-runner")
    planted = [dict(role, rules=role["rules"] + [{"apiGroups": ["apps"], "resources": ["deployments"],
                                                    "verbs": ["update"]}]),
               dict(role, rules=role["rules"] + [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}])]
    for doc in planted:
        policy = Policy.from_documents([d for d in docs if d is not role] + [doc], namespace_override=NS)
        assert unused(grants(policy), run.authorizations), doc["rules"][-1]
    wide = [dict(r) for r in role["rules"]]
    for r in wide:
        r.pop("resourceNames", None)
    policy = Policy.from_documents([d for d in docs if d is not role] + [dict(role, rules=wide)], namespace_override=NS)
    assert set(unnarrowed(grants(policy), run.authorizations, deploy_object_names())) >= {
        "patch deployments.apps (RoleBinding ml/inferchaos-runner -> Role inferchaos-runner)",
        "get services (RoleBinding ml/inferchaos-runner -> Role inferchaos-runner)"}


# ----------------------------------------------------------------------------- the runner's token
def test_the_runner_cannot_change_an_image_but_can_scale_the_pipeline() -> None:
    """PATCH spec.template.spec.containers[0].image with the runner's token is a 403 worded as
    kube-apiserver words it, for the inference Deployment; the scale pipeline_lag makes (and
    its read, its marks) is allowed, and nothing else of the Deployment's."""
    with FakeKube(policy=load_policy(manifest_files()), tokens={TOKEN: RUNNER}) as fake:
        template = {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "srv:1"}]}}
        for name in ("reference-server", "feature-pipeline"):
            fake.add("apps", "v1", "deployments", {"metadata": {"name": name, "namespace": NS},
                                                   "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "x"}},
                                                            "template": template}}, NS)
        api = fake.api_client(TOKEN)
        apps = client.AppsV1Api(api)
        image = [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "evil:1"}]
        with pytest.raises(ApiException) as caught:
            apps.patch_namespaced_deployment("reference-server", NS, image)
        assert caught.value.status == 403
        assert fake.requests(method="PATCH")[-1].content_type == "application/json-patch+json"
        body = yaml.safe_load(caught.value.body)
        assert (body["kind"], body["status"], body["reason"], body["code"]) == ("Status", "Failure", "Forbidden", 403)
        assert body["message"] == (f'deployments.apps "reference-server" is forbidden: User "{RUNNER}" cannot patch '
                                   f'resource "deployments" in API group "apps" in the namespace "{NS}"')
        assert body["details"] == {"name": "reference-server", "group": "apps", "kind": "deployments"}
        with pytest.raises(ApiException) as caught:
            apps.patch_namespaced_deployment_scale("reference-server", NS, {"spec": {"replicas": 0}})
        assert caught.value.status == 403, "the inference servers are scaled by nobody but their owners"
        assert fake.get("apps", "v1", "deployments", "reference-server", NS)["spec"]["template"]["spec"][
            "containers"][0]["image"] == "srv:1"

        assert apps.read_namespaced_deployment_scale("feature-pipeline", NS).spec.replicas == 2
        apps.patch_namespaced_deployment_scale("feature-pipeline", NS, {"spec": {"replicas": 0}})
        assert fake.get("apps", "v1", "deployments", "feature-pipeline", NS)["spec"]["replicas"] == 0
        apps.patch_namespaced_deployment("feature-pipeline", NS, {"metadata": {"annotations": {"inferchaos.io/run": "1"}}})
        assert apps.read_namespaced_deployment("feature-pipeline", NS).metadata.annotations["inferchaos.io/run"] == "1"
        # what refuses the image is the rule's resourceNames: without them the same patch passes
        docs = rbac_documents(manifest_files())
        role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "inferchaos-runner")
        wide = [{k: v for k, v in r.items() if k != "resourceNames"} if "deployments" in r["resources"] else r
                for r in role["rules"]]
        widened = Policy.from_documents([d for d in docs if d is not role] + [dict(role, rules=wide)],
                                        namespace_override=NS)
        assert widened.allows(RUNNER, "patch", "apps", "deployments", namespace=NS, name="reference-server")
        assert not fake.policy.allows(RUNNER, "patch", "apps", "deployments", namespace=NS, name="reference-server")
        for verb, call in (("update", lambda: apps.replace_namespaced_deployment(
                               "feature-pipeline", NS, apps.read_namespaced_deployment("feature-pipeline", NS))),
                           ("delete", lambda: apps.delete_namespaced_deployment("feature-pipeline", NS)),
                           ("create", lambda: apps.create_namespaced_deployment(NS, {
                               "metadata": {"name": "miner"}, "spec": {"selector": {"matchLabels": {"app": "x"}},
                                                                       "template": template}}))):
            with pytest.raises(ApiException) as caught:
                call()
            assert caught.value.status == 403, verb
        api.close()
