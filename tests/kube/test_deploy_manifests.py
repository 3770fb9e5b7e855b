"""Every manifest under deploy/ is checked strictly, without a cluster.

Built-in kinds are validated against the kubernetes client's own models: keys must be the
wire names the API knows (a typo like `contianers` or a snake_case `api_version` fails, as
`kubectl apply --validate=strict` would), then pydantic checks types and required fields.
Custom resources are checked against small hand-written schemas of the fields we use.
Kustomizations must reference files that exist, and every manifest must be reachable from a
kustomization (or be an example).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes.client import models
from pydantic import ValidationError

from tests.fakekube.podsecurity import restricted

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
IMAGE = "ghcr.io/inferchaos/inferchaos:latest"
NS = "inferchaos"
PIN_PLACEHOLDER = "REPLACE-WITH-KUBE-SYSTEM-UID"

# --- strict checking against the client's models ----------------------------------------------

_GENERIC = re.compile(r"^(List|Dict)\[(?:str, )?(.+)\]$")


def model_for(api_version: str, kind: str) -> type | None:
    version = api_version.rsplit("/", 1)[-1]
    return getattr(models, version[:1].upper() + version[1:] + kind, None)


def _unknown_keys(model: type, data: Any, path: str) -> list[str]:
    if not isinstance(data, dict):
        return []  # wrong shapes are pydantic's to report
    wire = {json_name: attr for attr, json_name in model.attribute_map.items()}
    errors = []
    for key, value in data.items():
        if key not in wire:
            errors.append(f"{path}.{key}: unknown field for {model.__name__}")
            continue
        errors += _check_type(model.openapi_types[wire[key]], value, f"{path}.{key}")
    return errors


def _check_type(type_name: str, value: Any, path: str) -> list[str]:
    if m := _GENERIC.match(type_name):
        inner = m.group(2)
        if m.group(1) == "List" and isinstance(value, list):
            return [e for i, item in enumerate(value) for e in _check_type(inner, item, f"{path}[{i}]")]
        if m.group(1) == "Dict" and isinstance(value, dict):
            return [e for k, item in value.items() for e in _check_type(inner, item, f"{path}.{k}")]
        return []
    model = getattr(models, type_name, None)
    return _unknown_keys(model, value, path) if isinstance(model, type) and hasattr(model, "attribute_map") else []


def check_builtin(doc: dict[str, Any], where: str, partial: bool = False) -> list[str]:
    """Problems with one built-in object; `partial` (a strategic merge patch) skips required fields."""
    model = model_for(doc.get("apiVersion", ""), doc.get("kind", ""))
    if model is None:
        return [f"{where}: no client model for {doc.get('apiVersion')}/{doc.get('kind')}"]
    errors = _unknown_keys(model, doc, where)
    if not errors and not partial:
        try:
            model.model_validate(doc)
        except ValidationError as exc:
            errors += [f"{where}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    return errors


# --- hand-written schemas for custom resources ------------------------------------------------
# A schema is a type (str, int, bool), a list holding one schema (every item), a dict of
# field -> schema (the only fields allowed), or {"*": schema} (any keys).

STR_MAP = {"*": str}
META = {"name": str, "namespace": str, "labels": STR_MAP, "annotations": STR_MAP}
CHAOS_SELECTOR = {"namespaces": [str], "labelSelectors": STR_MAP, "pods": {"*": [str]}}
REPLACEMENT = {"source": {"kind": str, "name": str, "fieldPath": str},
               "targets": [{"select": {"kind": str, "name": str}, "fieldPaths": [str]}]}
CR_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("keda.sh/v1alpha1", "ScaledObject"): {"spec": {
        "scaleTargetRef": {"apiVersion": str, "kind": str, "name": str},
        "minReplicaCount": int, "maxReplicaCount": int, "pollingInterval": int, "cooldownPeriod": int,
        "triggers": [{"type": str, "metadata": {"serverAddress": str, "query": str, "threshold": str,
                                                 "activationThreshold": str}}]}},
    ("monitoring.coreos.com/v1", "PrometheusRule"): {"spec": {"groups": [{
        "name": str, "interval": str,
        "rules": [{"alert": str, "record": str, "expr": str, "for": str, "labels": STR_MAP,
                   "annotations": STR_MAP}]}]}},
    ("monitoring.coreos.com/v1", "PodMonitor"): {"spec": {
        "selector": {"matchLabels": STR_MAP},
        "podMetricsEndpoints": [{"port": str, "path": str, "interval": str}]}},
    ("chaos-mesh.org/v1alpha1", "NetworkChaos"): {"spec": {
        "action": str, "mode": str, "value": str, "selector": CHAOS_SELECTOR, "direction": str, "duration": str,
        "delay": {"latency": str, "jitter": str, "correlation": str},
        "loss": {"loss": str, "correlation": str}}},
    ("chaos-mesh.org/v1alpha1", "IOChaos"): {"spec": {
        "action": str, "mode": str, "value": str, "selector": CHAOS_SELECTOR, "volumePath": str, "path": str,
        "methods": [str], "delay": str, "percent": int, "errno": int, "duration": str}},
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"): {
        "namespace": str, "resources": [str], "components": [str],
        "labels": [{"pairs": STR_MAP, "includeSelectors": bool, "includeTemplates": bool}],
        "patches": [{"path": str, "patch": str, "target": STR_MAP}],
        "images": [{"name": str, "newName": str, "newTag": str, "digest": str}],
        "configMapGenerator": [{"name": str, "behavior": str, "literals": [str], "files": [str],
                                "options": {"labels": STR_MAP, "annotations": STR_MAP,
                                            "disableNameSuffixHash": bool}}],
        "replacements": [REPLACEMENT]},
    ("kustomize.config.k8s.io/v1alpha1", "Component"): {
        "resources": [str], "patches": [{"path": str, "patch": str, "target": STR_MAP}],
        "configMapGenerator": [{"name": str, "files": [str], "options": {"labels": STR_MAP}}],
        "replacements": [REPLACEMENT]},
}
CHAOS_ACTIONS = {"NetworkChaos": {"delay", "loss", "partition", "bandwidth", "duplicate", "corrupt"},
                 "IOChaos": {"latency", "fault", "attrOverride", "mistake"}}


def _check_schema(schema: Any, value: Any, path: str) -> list[str]:
    if schema in (str, int, bool):
        ok = isinstance(value, schema) and not (schema is int and isinstance(value, bool))
        return [] if ok else [f"{path}: expected {schema.__name__}, got {type(value).__name__}"]
    if isinstance(schema, list):
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [e for i, item in enumerate(value) for e in _check_schema(schema[0], item, f"{path}[{i}]")]
    if not isinstance(value, dict):
        return [f"{path}: expected a mapping"]
    if set(schema) == {"*"}:
        return [e for k, item in value.items() for e in _check_schema(schema["*"], item, f"{path}.{k}")]
    errors = []
    for key, item in value.items():
        if key not in schema:
            errors.append(f"{path}.{key}: unknown field")
        else:
            errors += _check_schema(schema[key], item, f"{path}.{key}")
    return errors


def check_custom(doc: dict[str, Any], where: str) -> list[str]:
    api_version, kind = doc.get("apiVersion", ""), doc.get("kind", "")
    body = CR_SCHEMAS.get((api_version, kind))
    if body is None:
        return [f"{where}: no schema for {api_version}/{kind}"]
    schema = {"apiVersion": str, "kind": str, "metadata": META, **body}
    errors = _check_schema(schema, doc, where)
    if kind in CHAOS_ACTIONS and doc.get("spec", {}).get("action") not in CHAOS_ACTIONS[kind]:
        errors.append(f"{where}.spec.action: not a {kind} action")
    return errors


def check_document(doc: dict[str, Any], where: str, partial: bool = False) -> list[str]:
    if (doc.get("apiVersion"), doc.get("kind")) in CR_SCHEMAS:
        return check_custom(doc, where)
    return check_builtin(doc, where, partial)


# --- loading ------------------------------------------------------------------------------------

def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


ALL_YAML = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))
KUSTOMIZATIONS = [p for p in ALL_YAML if p.name == "kustomization.yaml"]


def patch_files() -> set[Path]:
    return {(k.parent / p["path"]).resolve() for k in KUSTOMIZATIONS for d in load(k)
            for p in d.get("patches", []) if "path" in p}


def objects(kind: str, under: str = "") -> list[dict[str, Any]]:
    return [d for p in ALL_YAML if p not in KUSTOMIZATIONS and str(p.relative_to(DEPLOY)).startswith(under)
            and p.resolve() not in patch_files() for d in load(p) if d.get("kind") == kind]


def one(kind: str, name: str) -> dict[str, Any]:
    [found] = [d for d in objects(kind) if d["metadata"]["name"] == name]
    return found


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc["spec"]
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]["containers"]


# --- tests --------------------------------------------------------------------------------------

def test_there_are_manifests() -> None:
    assert len(ALL_YAML) >= 10 and len(KUSTOMIZATIONS) >= 4


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_document_is_strictly_valid(path: Path) -> None:
    docs = load(path)
    assert docs, f"{path} holds no document"
    partial = path.resolve() in patch_files()
    errors = [e for i, d in enumerate(docs) for e in check_document(d, f"{path.name}#{i}", partial)]
    assert errors == []


def test_the_checker_fails_on_a_planted_typo() -> None:
    deployment = one("Deployment", "reference-server")
    assert check_document(deployment, "ok") == []
    typo = yaml.safe_load(yaml.safe_dump(deployment).replace("containers:", "contianers:"))
    errors = check_document(typo, "typo")
    assert any("contianers: unknown field for V1PodSpec" in e for e in errors), errors
    snake = yaml.safe_load(yaml.safe_dump(deployment).replace("readinessProbe:", "readiness_probe:"))
    assert any("readiness_probe: unknown field" in e for e in check_document(snake, "snake"))
    wrong_type = yaml.safe_load(yaml.safe_dump(deployment).replace("replicas: 3", "replicas: three"))
    assert any("replicas" in e for e in check_document(wrong_type, "type"))
    missing = yaml.safe_load(yaml.safe_dump(deployment))
    del missing["spec"]["selector"]
    assert any("selector" in e and "required" in e.lower() for e in check_document(missing, "missing"))


def test_the_custom_checker_fails_on_a_planted_typo() -> None:
    scaled = one("ScaledObject", "reference-server")
    assert check_document(scaled, "ok") == []
    scaled["spec"]["maxReplicasCount"] = scaled["spec"].pop("maxReplicaCount")
    assert check_document(scaled, "so") == ["so.spec.maxReplicasCount: unknown field"]
    chaos = objects("NetworkChaos")[0]
    chaos["spec"]["action"] = "delayy"
    assert check_document(chaos, "nc") == ["nc.spec.action: not a NetworkChaos action"]
    rule = one("PrometheusRule", "inferchaos-slo")
    rule["spec"]["groups"][0]["rules"][0]["for"] = 5
    assert check_document(rule, "pr") == ["pr.spec.groups[0].rules[0].for: expected str, got int"]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=lambda p: str(p.parent.relative_to(DEPLOY)))
def test_kustomizations_reference_what_exists(kustomization: Path) -> None:
    [doc] = load(kustomization)
    listed = doc.get("resources", []) + doc.get("components", []) + [p["path"] for p in doc.get("patches", [])
                                                                     if "path" in p]
    listed += [f for gen in doc.get("configMapGenerator", []) for f in gen.get("files", [])]
    assert listed or doc.get("replacements"), "an empty kustomization"
    for entry in listed:
        target = kustomization.parent / entry
        assert target.is_file() or (target / "kustomization.yaml").is_file(), f"{entry} does not exist"
    for component in doc.get("components", []):
        [comp] = load(kustomization.parent / component / "kustomization.yaml")
        assert comp["kind"] == "Component", f"{component} is not a Component"


def test_every_manifest_is_reachable_from_a_kustomization() -> None:
    reached = set(patch_files())
    for k in KUSTOMIZATIONS:
        for entry in load(k)[0].get("resources", []):
            reached.add((k.parent / entry).resolve())
    examples = DEPLOY / "examples"
    stray = [p for p in ALL_YAML if p not in KUSTOMIZATIONS and p.resolve() not in reached
             and examples not in p.parents]
    assert stray == []


def test_base_rbac_grants_cluster_wide_only_the_identity_read() -> None:
    """Which verbs the Role needs is derived from what the code calls, against a fake that
    enforces these very manifests (tests/kube/test_rbac_derived.py); here, only the shape."""
    [identity] = objects("ClusterRole", "base")
    assert identity["rules"] == [{"apiGroups": [""], "resources": ["namespaces"], "resourceNames": ["kube-system"],
                                  "verbs": ["get"]}]
    [role] = objects("Role", "base")
    [binding] = objects("RoleBinding", "base")
    [account] = objects("ServiceAccount", "base")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NS}]
    [cluster_binding] = objects("ClusterRoleBinding", "base")
    assert cluster_binding["roleRef"]["name"] == identity["metadata"]["name"]
    assert cluster_binding["subjects"] == binding["subjects"]


def test_node_access_only_in_the_spot_faults_component() -> None:
    spot_roles = [r for r in objects("ClusterRole") if r["metadata"]["name"] == "inferchaos-spot-faults"]
    assert [r for r in objects("ClusterRole", "base") if r["metadata"]["name"] == "inferchaos-spot-faults"] == []
    [cluster_role] = spot_roles
    assert {res for r in cluster_role["rules"] for res in r["resources"]} == {"nodes", "pods"}
    assert "delete" not in {v for r in cluster_role["rules"] for v in r["verbs"]}, "nodes are never deleted"
    assert {v for r in cluster_role["rules"] if "pods" in r["resources"] for v in r["verbs"]} == {"list"}
    # evicting and deleting pods is spot reclamation's alone: a namespaced Role of the component
    [spot_role] = objects("Role", "components/spot-faults")
    assert {(res, v) for r in spot_role["rules"] for res in r["resources"] for v in r["verbs"]} == {
        ("pods/eviction", "create"), ("pods", "delete")}
    [role] = objects("Role", "base")
    base = {(res, v) for r in role["rules"] for res in r["resources"] for v in r["verbs"]}
    assert not {("pods/eviction", "create"), ("pods", "delete")} & base
    bound = [b for b in objects("RoleBinding", "components/spot-faults") if b["roleRef"]["name"] == "inferchaos-spot-faults"]
    assert [b["roleRef"]["kind"] for b in bound] == ["Role"]
    spot = DEPLOY / "components" / "spot-faults" / "kustomization.yaml"
    users = [k for k in KUSTOMIZATIONS if "../../components/spot-faults" in load(k)[0].get("components", [])]
    assert [k.parent.name for k in users] == ["staging-spot"] and spot.is_file()


def test_the_sweeper_undoes_expired_changes_every_few_minutes() -> None:
    from inferchaos.cli import build_parser

    [sweeper] = [c for c in objects("CronJob") if c["metadata"]["name"] == "inferchaos-sweeper"]
    minutes = sweeper["spec"]["schedule"].split()[0]
    assert minutes.startswith("*/") and int(minutes[2:]) <= 10
    [container] = containers(sweeper)
    argv = " ".join(container["args"]).replace('"$INFERCHAOS_CLUSTER"', "uid").replace(
        '"$INFERCHAOS_NAMESPACE"', "ns").split()
    assert argv[:2] == ["exec", "inferchaos"]
    args = build_parser().parse_args(argv[2:])  # the real CLI accepts exactly these options
    assert args.expired and args.allow_cluster == ["uid"] and args.namespace == "ns"
    pod = sweeper["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "inferchaos-runner"


def test_the_target_namespace_opts_in_and_the_server_is_not_pid_1() -> None:
    [ns] = objects("Namespace", "base")
    assert ns["metadata"]["labels"]["inferchaos.io/allow-chaos"] == "true"
    pod = one("Deployment", "reference-server")["spec"]["template"]["spec"]
    assert pod["shareProcessNamespace"] is True


def test_cronjob_runs_the_experiments_nightly_into_the_reports_volume() -> None:
    [cron] = [c for c in objects("CronJob") if c["metadata"]["name"] == "inferchaos-nightly"]
    [container] = containers(cron)
    script = " ".join(container["command"] + container["args"])
    assert "pytest experiments/ --target kubernetes" in script
    assert script.index("inferchaos recover --expired") < script.index("pytest experiments/"), "recover first"
    assert '--allow-cluster "$INFERCHAOS_CLUSTER"' in script and "--allow-context" not in script
    assert '--chaos-report "$run"' in script and "--alluredir" in script and "$(date" in script
    assert len(cron["spec"]["schedule"].split()) == 5 and cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == one("ServiceAccount", "inferchaos-runner")["metadata"]["name"]
    [volume] = pod["volumes"]
    claim = volume["persistentVolumeClaim"]["claimName"]
    assert one("PersistentVolumeClaim", claim) and container["volumeMounts"][0]["mountPath"] == "/reports"


def test_reference_server_args_parse_with_the_real_server() -> None:
    from inferchaos.targets.local.server_config import parse_args

    deployment = one("Deployment", "reference-server")
    [container] = containers(deployment)
    assert container["command"] == ["python", "-m", "inferchaos.targets.local.server"]
    config = parse_args([a.replace("$(POD_NAME)", "ref-0") for a in container["args"]])
    assert config.port == container["ports"][0]["containerPort"] == 8000 and config.name == "ref-0"
    import ipaddress
    assert not ipaddress.ip_address(config.host).is_loopback, "a Service reaches the pod IP, not its loopback"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > float(
        container["args"][container["args"].index("--shutdown-timeout-s") + 1])


def test_the_nightly_runner_names_its_pod_in_its_ledger_and_is_scraped() -> None:
    """What the next run's recover needs to tell a dead runner's changes from a live one's:
    the variable the code reads (faults.kubernetes.base.RUNNER_POD_ENV) set to the pod's own
    name; and the runner's metrics port is one a PodMonitor scrapes."""
    from inferchaos.faults.kubernetes.base import RUNNER_POD_ENV

    [cron] = [c for c in objects("CronJob") if c["metadata"]["name"] == "inferchaos-nightly"]
    [container] = containers(cron)
    env = {e["name"]: e for e in container["env"]}
    assert env[RUNNER_POD_ENV]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # the load's master (the variable the engine reads) binds where the worker pods connect, for
    # as many workers as the Deployment runs
    from inferchaos.engine import LOAD_MASTER_ENV

    port = int(env[LOAD_MASTER_ENV]["value"].rpartition(":")[2])
    service = one("Service", "locust-master")["spec"]
    assert service["ports"][0]["targetPort"] == port and port in {p["containerPort"] for p in container["ports"]}
    workers = [d for d in objects("Deployment") if "locust" in d["metadata"]["name"]]
    assert f"--load-workers {sum(d['spec']['replicas'] for d in workers)}" in " ".join(container["args"])
    labels = cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    ports = {p["name"] for p in container["ports"]}
    assert any(m["spec"]["selector"]["matchLabels"].items() <= labels.items()
               and {e["port"] for e in m["spec"]["podMetricsEndpoints"]} <= ports for m in objects("PodMonitor"))
    [rule] = [r for g in one("PrometheusRule", "inferchaos-ledger")["spec"]["groups"] for r in g["rules"]]
    from inferchaos.targets.kubernetes.runledger import PREFIX

    assert PREFIX in rule["expr"] and "kube_configmap_created" in rule["expr"]


def test_selectors_match_their_pods() -> None:
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in objects("Deployment")}
    for deployment in objects("Deployment"):
        assert deployment["spec"]["selector"]["matchLabels"].items() <= pods[deployment["metadata"]["name"]].items()
    # a Service may also reach a CronJob's pods (locust-master: the runner is the master)
    pods |= {c["metadata"]["name"]: c["spec"]["jobTemplate"]["spec"]["template"]["metadata"].get("labels", {})
             for c in objects("CronJob")}
    for service in objects("Service"):
        assert any(service["spec"]["selector"].items() <= labels.items() for labels in pods.values()), service
    for pdb in objects("PodDisruptionBudget"):
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pods[pdb["metadata"]["name"]].items()
    target = one("ScaledObject", "reference-server")["spec"]["scaleTargetRef"]
    assert target["kind"] == "Deployment" and target["name"] in pods


def test_locust_workers_connect_to_the_runner_as_master() -> None:
    [worker] = containers(one("Deployment", "locust-worker"))
    words = " ".join(worker["args"]).split()
    assert "/app/load/locustfile.py" in words and "--worker" in words
    assert words[words.index("--master-host") + 1] == "locust-master" and words[words.index("--master-port") + 1] == "5557"
    service = one("Service", "locust-master")["spec"]
    runner = one("CronJob", "inferchaos-nightly")["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= runner.items(), "the master is the runner's pod"
    assert {p["port"] for p in service["ports"]} == {5557}
    assert (DEPLOY.parent / "load" / "locustfile.py").is_file()


def test_every_image_is_the_placeholder() -> None:
    images = {c["image"] for kind in ("Deployment", "CronJob") for d in objects(kind) for c in containers(d)}
    assert images == {IMAGE}


def test_slo_queries_use_the_server_metrics() -> None:
    query = one("ScaledObject", "reference-server")["spec"]["triggers"][0]["metadata"]["query"]
    assert query == 'sum(vllm:num_requests_waiting{namespace="inferchaos"})'
    exprs = " ".join(r["expr"] for g in one("PrometheusRule", "inferchaos-slo")["spec"]["groups"] for r in g["rules"])
    assert "vllm:e2e_request_latency_seconds_bucket" in exprs and "histogram_quantile(0.99" in exprs
    assert "vllm:num_requests_waiting" in exprs
    alerts = {r.get("alert") for g in one("PrometheusRule", "inferchaos-slo")["spec"]["groups"] for r in g["rules"]}
    assert {"InferenceAvailabilityLow", "InferenceLatencyP99High", "InferenceQueueBacklog"} <= alerts


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("overlay", ["base", "overlays/staging", "overlays/staging-spot"])
def test_kustomize_builds_and_the_result_is_valid(overlay: str) -> None:
    built = subprocess.run(["kubectl", "kustomize", str(DEPLOY / overlay)], capture_output=True, text=True,
                           timeout=60)
    assert built.returncode == 0, built.stderr
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    errors = [e for i, d in enumerate(docs) for e in check_document(d, f"{overlay}#{i}")]
    assert errors == []
    namespaced = [d for d in docs if d["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding")]
    assert {d["metadata"].get("namespace") for d in namespaced} == {NS}
    has_node_access = any(d["kind"] == "ClusterRole" and d["metadata"]["name"] == "inferchaos-spot-faults"
                          for d in docs)
    assert has_node_access == (overlay == "overlays/staging-spot")
    [cron] = [d for d in docs if d["kind"] == "CronJob" and d["metadata"]["name"] == "inferchaos-nightly"]
    addopts = {e["name"]: e.get("value") for e in containers(cron)[0]["env"]}["PYTEST_ADDOPTS"]
    assert shlex.split(addopts) == ([] if has_node_access else ["-m", "not spot_reclamation"])
    # what is applied: every pod "restricted", the image by digest in the overlays, and no
    # ConfigMap holding the cluster pin (it is in the CronJobs' pod specs)
    assert {w: v for w, pod in pod_specs(docs) if (v := restricted(pod))} == {}
    images = {c["image"] for _, pod in pod_specs(docs) for c in pod["containers"]}
    if overlay == "base":
        assert images == {IMAGE}
    else:
        assert len(images) == 1 and re.fullmatch(IMAGE.split(":")[0] + r"@sha256:[0-9a-f]{64}", images.pop())
    assert [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("inferchaos-cluster")] == []
    pins = {d["metadata"]["name"]: {e["name"]: e for e in containers(d)[0]["env"]}["INFERCHAOS_CLUSTER"]
            for d in docs if d["kind"] == "CronJob"}
    assert pins == {"inferchaos-nightly": {"name": "INFERCHAOS_CLUSTER", "value": PIN_PLACEHOLDER},
                    "inferchaos-sweeper": {"name": "INFERCHAOS_CLUSTER", "value": PIN_PLACEHOLDER}}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_an_overlay_sets_the_cluster_pin_into_the_cronjobs_and_applies_no_configmap(tmp_path: Path) -> None:
    """As an operator pins their cluster: an overlay of staging-spot merging its UID into the
    generator and including components/cluster-pin. The UID lands in both CronJobs' env (in
    the pod spec, which the runner cannot write) and no ConfigMap inferchaos-cluster is applied
    (the runner's ledger rights, update and delete on ConfigMaps there, could rewrite one)."""
    overlay = tmp_path / "mine"
    overlay.mkdir()
    rel = Path(os.path.relpath(DEPLOY, overlay))
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [str(rel / "overlays" / "staging-spot")],
        "components": [str(rel / "components" / "cluster-pin")],
        "configMapGenerator": [{"name": "inferchaos-cluster", "behavior": "merge",
                                "literals": ["uid=6f1c0b2e-0000-4000-8000-000000000001"]}]}))
    built = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    pins = {d["metadata"]["name"]: {e["name"]: e.get("value") for e in containers(d)[0]["env"]}["INFERCHAOS_CLUSTER"]
            for d in docs if d["kind"] == "CronJob"}
    assert pins == {"inferchaos-nightly": "6f1c0b2e-0000-4000-8000-000000000001",
                    "inferchaos-sweeper": "6f1c0b2e-0000-4000-8000-000000000001"}
    assert not [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("inferchaos-cluster")]


def test_the_cluster_pin_is_out_of_the_runners_reach() -> None:
    """Nothing reads the pin from a ConfigMap; the CronJobs carry it, and the runner's account
    may not change a CronJob, a Job or a pod spec (nor create a pod that would carry another)."""
    from tests.fakekube.rbac import Policy, service_account

    refs = [(w, e["name"]) for w, pod in pod_specs(all_documents()) for c in pod["containers"]
            for e in c.get("env", []) if "configMapKeyRef" in (e.get("valueFrom") or {})]
    assert refs == [], "an env var read from a ConfigMap the runner could rewrite"
    [generator] = [g for g in load(DEPLOY / "base" / "kustomization.yaml")[0]["configMapGenerator"]
                   if g["name"] == "inferchaos-cluster"]
    assert generator["options"]["annotations"] == {"config.kubernetes.io/local-config": "true"}
    assert generator["literals"] == [f"uid={PIN_PLACEHOLDER}"]
    for cron in objects("CronJob"):
        env = {e["name"]: e for e in containers(cron)[0]["env"]}
        assert env["INFERCHAOS_CLUSTER"] == {"name": "INFERCHAOS_CLUSTER", "value": PIN_PLACEHOLDER}
    policy = Policy.from_documents([d for p in ALL_YAML if p not in KUSTOMIZATIONS for d in load(p)])
    runner = service_account(NS, "inferchaos-runner")
    for verb in ("create", "update", "patch", "delete"):
        for group, resource in (("batch", "cronjobs"), ("batch", "jobs"), ("", "pods"), ("", "serviceaccounts")):
            if (verb, resource) == ("delete", "pods"):
                continue  # spot reclamation's deadline (components/spot-faults); it changes no spec
            assert not policy.allows(runner, verb, group, resource, namespace=NS, name="inferchaos-nightly"), \
                (verb, resource)


def test_the_roles_resource_names_are_what_the_nightly_run_names() -> None:
    """resourceNames narrow the pipeline Deployment and the model store's Service to the ones
    the CronJob's arguments name: renaming one without the other would break the fault."""
    [cron] = [c for c in objects("CronJob") if c["metadata"]["name"] == "inferchaos-nightly"]
    words = shlex.split(" ".join(containers(cron)[0]["args"]))
    pipeline = words[words.index("--pipeline-deployment") + 1]
    deps = dict(words[i + 1].split("=", 1) for i, w in enumerate(words) if w == "--dependency")
    [role] = objects("Role", "base")
    named = {(res, tuple(r["resourceNames"])) for r in role["rules"] if r.get("resourceNames") for res in r["resources"]}
    assert named == {("deployments", (pipeline,)), ("deployments/scale", (pipeline,)),
                     ("services", (deps["model_store"].split(".")[0],))}
    assert {d["metadata"]["name"] for d in objects("Deployment")} >= {pipeline}
    assert {s["metadata"]["name"] for s in objects("Service")} >= {deps["model_store"].split(".")[0]}


# --- Pod Security "restricted" ------------------------------------------------------------------
# one model of the admission, the fake API server's (tests/fakekube/podsecurity.py), in its words


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(kind/name, pod spec) for every pod a document makes."""
    out = []
    for d in docs:
        spec = d.get("spec") or {}
        if d.get("kind") == "Pod":
            pod = spec
        else:
            spec = (spec.get("jobTemplate") or {}).get("spec", spec)
            pod = (spec.get("template") or {}).get("spec")
        if pod:
            out.append((f"{d['kind']}/{d['metadata']['name']}", pod))
    return out


def all_documents() -> list[dict[str, Any]]:
    return [d for p in ALL_YAML if p not in KUSTOMIZATIONS and p.resolve() not in patch_files() for d in load(p)]


def test_every_pod_is_pod_security_restricted() -> None:
    pods = pod_specs(all_documents())
    assert {w.split("/")[1] for w, _ in pods} >= {"inferchaos-nightly", "inferchaos-sweeper", "reference-server",
                                                  "model-store", "feature-store", "feature-pipeline", "locust-worker"}
    assert {w: v for w, pod in pods if (v := restricted(pod))} == {}


def test_the_restricted_check_fails_on_planted_violations() -> None:
    pod = yaml.safe_load(yaml.safe_dump(one("Deployment", "reference-server")))["spec"]["template"]["spec"]
    assert restricted(pod) == []
    container = pod["containers"][0]
    container["securityContext"]["capabilities"]["drop"] = ["NET_RAW"]
    container["securityContext"]["allowPrivilegeEscalation"] = True
    del pod["securityContext"]["seccompProfile"]
    pod["securityContext"]["runAsNonRoot"] = False
    pod["volumes"] = [{"name": "host", "hostPath": {"path": "/"}}]
    assert restricted(pod) == [
        'allowPrivilegeEscalation != false (container "server" must set securityContext.allowPrivilegeEscalation=false)',
        'unrestricted capabilities (container "server" must set securityContext.capabilities.drop=["ALL"])',
        'restricted volume types (volume "host" uses restricted volume type "hostPath")',
        'runAsNonRoot != true (pod must not set securityContext.runAsNonRoot=false)',
        'seccompProfile (pod or container "server" must set securityContext.seccompProfile.type to "RuntimeDefault" '
        'or "Localhost")']


def test_every_pod_is_admitted_by_the_api_server_in_our_namespace() -> None:
    """Each pod deploy/ makes, created as a Pod in a namespace labelled as deploy/'s own, through
    the fake API server's Pod Security admission: 201, none refused."""
    from tests.fakekube import FakeKube

    [ns] = objects("Namespace")
    with FakeKube() as fake, httpx.Client(base_url=fake.url, timeout=10) as http:
        fake.add("", "v1", "namespaces", {"metadata": {"name": NS, "labels": ns["metadata"]["labels"]}})
        answers = {}
        for where, spec in pod_specs(all_documents()):
            name = where.split("/")[1].lower()
            sent = http.post(f"/api/v1/namespaces/{NS}/pods",
                             json={"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
            answers[where] = (sent.status_code, sent.json().get("message", ""))
        refused = {w: a for w, a in answers.items() if a[0] != 201}
        assert refused == {} and len(answers) >= 7, answers
        bare = http.post(f"/api/v1/namespaces/{NS}/pods", json={
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nginx"},
            "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}})
    # the control, and the admission's words as Kubernetes' Pod Security docs show them
    assert bare.status_code == 403 and bare.json()["message"] == (
        'pods "nginx" is forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false '
        '(container "nginx" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities '
        '(container "nginx" must set securityContext.capabilities.drop=["ALL"]), runAsNonRoot != true (pod or '
        'container "nginx" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container "nginx" '
        'must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")')


def test_our_namespace_enforces_pod_security_restricted() -> None:
    [ns] = objects("Namespace")
    labels = ns["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels.get("pod-security.kubernetes.io/warn", "restricted") == "restricted"


# --- the image by digest ------------------------------------------------------------------------
def test_the_overlays_pin_the_image_by_digest() -> None:
    """Each overlay (itself, or the overlay it builds on) names the image by digest, never by
    tag; the digest is the release's placeholder until the release process writes it."""
    overlays = sorted(k.parent for k in KUSTOMIZATIONS if "overlays" in k.parts)
    assert overlays

    def images_of(directory: Path) -> list[dict[str, Any]]:
        [doc] = load(directory / "kustomization.yaml")
        inherited = [i for r in doc.get("resources", []) if (directory / r).resolve().parent.name == "overlays"
                     for i in images_of((directory / r).resolve())]
        return doc.get("images", []) + inherited

    for overlay in overlays:
        found = [i for i in images_of(overlay) if i["name"] == IMAGE.split(":")[0]]
        assert found, f"{overlay.name}: the image is not pinned"
        for image in found:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", image.get("digest", "")), (overlay.name, image)
            assert "newTag" not in image, (overlay.name, image)


# --- the locust master's port -------------------------------------------------------------------
def reachers(policies: list[dict[str, Any]], labels: dict[str, str], port: int) -> list[dict[str, Any] | None]:
    """Who the NetworkPolicies selecting pods with `labels` let reach `port`: each rule's `from`
    peer, or None for "anyone" (a rule without `from`). [None] when no policy isolates the pods."""
    selecting = [p for p in policies if p["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()
                 and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])]
    if not selecting:
        return [None]
    out: list[dict[str, Any] | None] = []
    for p in selecting:
        for rule in p["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports is None or any(q.get("port") in (port, None) for q in ports):
                out += rule.get("from") or [None]
    return out


def runner_pod() -> tuple[dict[str, str], dict[str, Any]]:
    [cron] = [c for c in objects("CronJob") if c["metadata"]["name"] == "inferchaos-nightly"]
    template = cron["spec"]["jobTemplate"]["spec"]["template"]
    return template["metadata"]["labels"], template["spec"]


def test_only_the_locust_workers_reach_the_master_port() -> None:
    service = one("Service", "locust-master")["spec"]
    port = service["ports"][0]["targetPort"]
    labels, pod = runner_pod()
    assert service["selector"].items() <= labels.items()
    peers = reachers(objects("NetworkPolicy"), labels, port)
    workers = one("Deployment", "locust-worker")["spec"]["template"]["metadata"]["labels"]
    assert peers and all(p is not None and set(p) == {"podSelector"} for p in peers), peers
    templates = {d["metadata"]["name"]: d["spec"].get("jobTemplate", {}).get("spec", d["spec"])["template"]
                 ["metadata"].get("labels", {}) for d in all_documents() if d.get("kind") in ("Deployment", "CronJob")}
    for peer in peers:
        wanted = peer["podSelector"]["matchLabels"]
        assert wanted and wanted.items() <= workers.items()
        assert [n for n, t in templates.items() if wanted.items() <= t.items()] == ["locust-worker"], wanted
    # isolating the runner's pods must not cut its metrics off: every other port it serves stays open
    served = {p["containerPort"] for c in pod["containers"] for p in c.get("ports", [])} - {port}
    assert served and all(None in reachers(objects("NetworkPolicy"), labels, q) for q in served)


def test_the_network_policy_check_fails_when_the_master_port_is_open() -> None:
    labels, _ = runner_pod()
    policy = yaml.safe_load(yaml.safe_dump(one("NetworkPolicy", "locust-master")))
    assert reachers([policy], labels, 5557) == [policy["spec"]["ingress"][0]["from"][0]]
    assert reachers([], labels, 5557) == [None], "no policy: anyone"
    policy["spec"]["ingress"][1]["ports"].append({"protocol": "TCP", "port": 5557})
    assert None in reachers([policy], labels, 5557)
    policy["spec"]["ingress"][1]["ports"] = [{"protocol": "TCP", "port": 9464}]
    policy["spec"]["ingress"][0]["from"].append({"namespaceSelector": {}})
    assert {"namespaceSelector": {}} in reachers([policy], labels, 5557)


# --- the Grafana dashboard --------------------------------------------------------------------
DASHBOARD = DEPLOY / "components" / "monitoring" / "inferchaos-dashboard.json"


def test_the_grafana_dashboard_shows_the_three_layers_and_the_fault_windows() -> None:
    """GPU (memory, power, XID), performance (p99, cold starts, queue) and the fault windows,
    each panel a Prometheus query; the windows also as annotations over every panel."""
    import json

    dash = json.loads(DASHBOARD.read_text())
    exprs = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in dash["panels"]}
    needed = {"GPU memory used": "DCGM_FI_DEV_FB_USED", "GPU power": "DCGM_FI_DEV_POWER_USAGE",
              "GPU XID errors": "DCGM_FI_DEV_XID_ERRORS", "p99 latency (servers)": "vllm:e2e_request_latency_seconds",
              "Queue length": "vllm:num_requests_waiting", "Cold starts and restarts": "kube_pod_status_ready",
              "Fault windows": "inferchaos_fault_active"}
    for title, metric in needed.items():
        assert metric in exprs.get(title, ""), f"panel {title!r} should query {metric}"
    for p in dash["panels"]:
        assert p["datasource"]["type"] == "prometheus" and p["targets"], p["title"]
    kinds = {a["datasource"]["type"] for a in dash["annotations"]["list"]}
    assert kinds == {"prometheus", "grafana"}
    assert any("inferchaos_fault_active" in a.get("expr", "") for a in dash["annotations"]["list"])
    assert any("inferchaos" in a.get("target", {}).get("tags", []) for a in dash["annotations"]["list"])
