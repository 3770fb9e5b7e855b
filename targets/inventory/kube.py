"""The inference workloads of Kubernetes namespaces: Deployments, StatefulSets and, where
KServe is installed, InferenceServices — read with GETs only.

A workload is listed when it asks for GPUs (`nvidia.com/gpu`) or names a model (a `model`
label or annotation, or a `--model`-like argument of its containers); InferenceServices
always. Given a selector (a run's `--selector`), exactly the workloads whose pods it picks
are listed, as those are what the run tested. Objects are read as plain JSON
(`_preload_content=False`): the client's strict models would reject a real cluster's odd
objects, and the custom resources are plain JSON anyway.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.utils.quantity import parse_quantity
from urllib3.exceptions import HTTPError as Urllib3Error

from inferchaos.ground.errors import TargetError, UsageError
from inferchaos.targets.inventory.workload import DEFAULT_OWNER_KEYS, Workload
from inferchaos.targets.kubernetes.settings import equality_terms

GPU_RESOURCE = "nvidia.com/gpu"
#: Node labels that say which GPU a node has, best first.
GPU_TYPE_LABELS = ("nvidia.com/gpu.product", "node.kubernetes.io/instance-type", "beta.kubernetes.io/instance-type")
MODEL_KEYS = ("model",)
MODEL_FLAGS = ("--model", "--model-id", "--model-name")
KSERVE = ("serving.kserve.io", "v1beta1", "inferenceservices")
KSERVE_LABEL = "serving.kserve.io/inferenceservice"
NAME_LABEL = "app.kubernetes.io/name"

Obj = dict[str, Any]


@dataclass(frozen=True)
class Snapshot:
    """What one inventory read: the lists it needs, and what it could not read."""

    workloads: list[tuple[str, Obj]]  # (kind, object)
    pods: list[Obj]
    nodes: dict[str, Obj]
    notes: tuple[str, ...]


def _data(call: Callable[..., Any], *args: Any) -> Obj:
    return json.loads(call(*args, _preload_content=False).data)


class Reader:
    """The lists one inventory needs, namespace by namespace (or cluster-wide)."""

    def __init__(self, api: client.ApiClient, context: str) -> None:
        self.core, self.apps = client.CoreV1Api(api), client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.context = context

    def _list(self, what: str, namespace: str | None, namespaced: Callable[..., Any],
              everywhere: Callable[..., Any], *crd: str) -> list[Obj]:
        try:
            if namespace is None:
                return _data(everywhere, *crd).get("items") or []
            args = (*crd[:2], namespace, *crd[2:]) if crd else (namespace,)
            return _data(namespaced, *args).get("items") or []
        except ApiException as exc:
            where = f"namespace {namespace}" if namespace else "all namespaces"
            raise TargetError(f"cannot list {what} in {where} (context {self.context}): "
                              f"{exc.status} {exc.reason}") from None
        except (Urllib3Error, OSError) as exc:
            raise UsageError(f"cannot reach the API server of context {self.context}: {exc}") from None

    def read(self, namespaces: Sequence[str] | None) -> Snapshot:
        spaces: list[str | None] = list(namespaces) if namespaces is not None else [None]
        workloads: list[tuple[str, Obj]] = []
        pods: list[Obj] = []
        notes: list[str] = []
        kserve = True
        for ns in spaces:
            workloads += [("Deployment", d) for d in self._list(
                "deployments", ns, self.apps.list_namespaced_deployment, self.apps.list_deployment_for_all_namespaces)]
            workloads += [("StatefulSet", s) for s in self._list(
                "statefulsets", ns, self.apps.list_namespaced_stateful_set,
                self.apps.list_stateful_set_for_all_namespaces)]
            pods += self._list("pods", ns, self.core.list_namespaced_pod, self.core.list_pod_for_all_namespaces)
            if kserve:
                try:
                    workloads += [("InferenceService", i) for i in self._list(
                        "inferenceservices", ns, self.custom.list_namespaced_custom_object,
                        self.custom.list_custom_object_for_all_namespaces, *KSERVE)]
                except TargetError:  # the CRD is not installed (404), or not ours to read (403)
                    kserve = False
        try:
            nodes = {n["metadata"]["name"]: n for n in _data(self.core.list_node).get("items") or []}
        except ApiException as exc:
            nodes = {}
            notes.append(f"node GPU types unknown: nodes not readable ({exc.status} {exc.reason})")
        return Snapshot(workloads, pods, nodes, tuple(notes))


# ----------------------------------------------------------------------------- reading one object
def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _labels(obj: Obj) -> dict[str, str]:
    return _meta(obj).get("labels") or {}


def matches(selector: Obj, labels: dict[str, str]) -> bool:
    """A workload's `spec.selector` (matchLabels and matchExpressions) against pod labels."""
    if not selector:
        return False
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
        if (op == "In" and labels.get(key) not in values) or (op == "NotIn" and labels.get(key) in values) \
                or (op == "Exists" and key not in labels) or (op == "DoesNotExist" and key in labels):
            return False
    return True


def _ready(pod: Obj) -> bool:
    if _meta(pod).get("deletionTimestamp"):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def gpu_counts(containers: list[Obj]) -> tuple[int | None, int | None]:
    """nvidia.com/gpu requests and limits summed over the containers (None: not set)."""
    sums: dict[str, int | None] = {"requests": None, "limits": None}
    for c in containers:
        resources = c.get("resources") or {}
        for which in sums:
            value = (resources.get(which) or {}).get(GPU_RESOURCE)
            try:
                count = int(parse_quantity(value)) if value is not None else None
            except (ValueError, TypeError):
                count = None  # not a quantity: the API server would have refused it
            if count is not None:
                sums[which] = (sums[which] or 0) + count
    return sums["requests"], sums["limits"]


def model_from_args(containers: list[Obj]) -> tuple[str, str] | None:
    """`--model X`, `--model=X`, `--model-id X`, `--model-name X`, or `vllm serve X`, in a
    container's command or args (a shell string `sh -c "..."` is split too)."""
    for c in containers:
        tokens: list[str] = []
        for part in (c.get("command") or []) + (c.get("args") or []):
            try:
                tokens += shlex.split(part) if " " in part else [part]
            except ValueError:
                tokens.append(part)
        for flag in MODEL_FLAGS:
            for i, tok in enumerate(tokens):
                if tok == flag and i + 1 < len(tokens):
                    return tokens[i + 1], f"args {flag}"
                if tok.startswith(flag + "="):
                    return tok.split("=", 1)[1], f"args {flag}"
        for i, tok in enumerate(tokens[:-1]):
            if tok == "serve" and i and tokens[i - 1].endswith("vllm") and not tokens[i + 1].startswith("-"):
                return tokens[i + 1], "args vllm serve"
    return None


def _explicit_model(*objs: Obj) -> tuple[str, str] | None:
    for obj in objs:
        meta = _meta(obj)
        for where in ("labels", "annotations"):
            for key in MODEL_KEYS:
                value = (meta.get(where) or {}).get(key)
                if value:
                    return value, f"{where[:-1]} {key}"
    return None


def _gpu_types(pods: list[Obj], nodes: dict[str, Obj], node_selector: dict[str, str]) -> tuple[str, ...]:
    found = set()
    for pod in pods:
        node = nodes.get((pod.get("spec") or {}).get("nodeName") or "")
        labels = _labels(node) if node else {}
        kind = next((labels[k] for k in GPU_TYPE_LABELS if labels.get(k)), None)
        if kind:
            found.add(kind)
    if not found:  # nothing scheduled (or nodes unreadable): what the pods ask to run on
        found.update(node_selector[k] for k in GPU_TYPE_LABELS if node_selector.get(k))
    return tuple(sorted(found))


# ----------------------------------------------------------------------------- one workload
def _model(kind: str, obj: Obj, template: Obj, containers: list[Obj]) -> tuple[str, str] | None:
    """Best first: a `model` label or annotation, a storageUri (KServe), the containers'
    arguments; then the InferenceService's name or the app.kubernetes.io/name label."""
    found = _explicit_model(obj, template)
    if found is None and kind == "InferenceService":
        uri = (((obj.get("spec") or {}).get("predictor") or {}).get("model") or {}).get("storageUri")
        found = (uri, "storageUri") if uri else None
    found = found or model_from_args(containers)
    if found is None and kind == "InferenceService":
        found = (_meta(obj).get("name"), "metadata.name")
    name = _labels(obj).get(NAME_LABEL) or _labels(template).get(NAME_LABEL)
    return found or ((name, f"label {NAME_LABEL}") if name else None)


def workload_of(kind: str, obj: Obj, snap: Snapshot, owner_keys: tuple[str, ...], context: str) -> Workload:
    meta, spec = _meta(obj), obj.get("spec") or {}
    ns = meta.get("namespace")
    if kind == "InferenceService":
        predictor = spec.get("predictor") or {}
        model = predictor.get("model") or {}
        containers = ([model] if model else []) + (predictor.get("containers") or [])
        template: Obj = {"spec": predictor}
        desired = int(predictor.get("minReplicas", 1))
        own_pods = [p for p in snap.pods if _meta(p).get("namespace") == ns
                    and _labels(p).get(KSERVE_LABEL) == meta.get("name")]
    else:
        template = spec.get("template") or {}
        containers = (template.get("spec") or {}).get("containers") or []
        desired = int(spec.get("replicas", 1))
        own_pods = [p for p in snap.pods if _meta(p).get("namespace") == ns
                    and matches(spec.get("selector") or {}, _labels(p))]
    named = _model(kind, obj, template, containers)
    requests, limits = gpu_counts(containers)
    labels = {**_labels(template), **_labels(obj)}
    owner = {k: labels[k] for k in owner_keys if labels.get(k)}
    node_selector = (template.get("spec") or {}).get("nodeSelector") or {}
    return Workload(
        target="kubernetes", kind=kind, name=meta.get("name", "?"), namespace=ns,
        model=named[0] if named else None, model_source=named[1] if named else "none",
        replicas_ready=sum(_ready(p) for p in own_pods), replicas_desired=desired,
        gpus_per_replica=max(requests or 0, limits or 0), gpu_requests=requests, gpu_limits=limits,
        gpu_types=_gpu_types(own_pods, snap.nodes, node_selector), owner=owner, owner_keys=tuple(owner_keys),
        context=context, notes=snap.notes,
    )


def _listed(w: Workload, kind: str, obj: Obj, selector: str | None) -> bool:
    if selector is not None:
        want = equality_terms(selector)
        template = (obj.get("spec") or {}).get("template") or {}
        labels = _labels(obj) if kind == "InferenceService" else _labels(template)
        return bool(want) and all(labels.get(k) == v for k, v in want.items())
    named = w.model_source.startswith(("label model", "annotation", "args"))
    return kind == "InferenceService" or w.gpus_per_replica > 0 or named


def kube_inventory(api: client.ApiClient, namespaces: Sequence[str] | None, context: str,
                   owner_keys: tuple[str, ...] = DEFAULT_OWNER_KEYS, selector: str | None = None) -> list[Workload]:
    """The inference workloads of `namespaces` (None: every namespace), with GETs only.
    Raises TargetError when a list is refused, UsageError when the API server is unreachable."""
    snap = Reader(api, context).read(namespaces)
    served = {(_meta(o).get("namespace"), _meta(o).get("name")) for k, o in snap.workloads if k == "InferenceService"}
    out = []
    for kind, obj in snap.workloads:
        if kind != "InferenceService" and (_meta(obj).get("namespace"), _labels(obj).get(KSERVE_LABEL)) in served:
            continue  # the Deployment KServe made for an InferenceService listed already
        w = workload_of(kind, obj, snap, owner_keys, context)
        if _listed(w, kind, obj, selector):
            out.append(w)
    return sorted(out, key=lambda w: (w.namespace or "", w.kind, w.name))
