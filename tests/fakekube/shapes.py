"""Kubernetes-shaped bodies: Status errors, Lists, Scale, and discovery documents."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.fakekube.rbac import Attributes, forbidden_message
from tests.fakekube.store import SCALABLE, Resource

REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed", 409: "Conflict", 410: "Expired",
           415: "UnsupportedMediaType", 422: "Invalid", 429: "TooManyRequests", 500: "InternalError",
           503: "ServiceUnavailable"}

# every field: the client's VersionInfo model requires them all
VERSION = {"major": "1", "minor": "31", "gitVersion": "v1.31.0-fakekube", "gitCommit": "0" * 40,
           "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.22.0",
           "compiler": "gc", "platform": "linux/amd64"}
API_VERSIONS = {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


def status_body(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Success" if code < 400 else "Failure",
        "message": message, "reason": reason, "code": code,
    }
    if details is not None:
        body["details"] = details
    return body


def status_response(code: int, reason: str | None, message: str, details: dict[str, Any] | None = None) -> web.Response:
    return web.json_response(status_body(code, reason or REASONS.get(code, "Unknown"), message, details), status=code)


def unauthorized_response() -> web.Response:
    """What kube-apiserver answers a request whose credentials it cannot authenticate."""
    return status_response(401, "Unauthorized", "Unauthorized")


def forbidden_response(user: str, attrs: Attributes, reason: str = "") -> web.Response:
    """A denial as kube-apiserver writes it: details name the resource without its subresource
    (`kind` "pods" for pods/eviction) and the group only when it is not the core one."""
    details = {k: v for k, v in (("name", attrs.name), ("group", attrs.group), ("kind", attrs.resource)) if v}
    return status_response(403, "Forbidden", forbidden_message(user, attrs, reason), details)


def list_body(resource: Resource, items: list[dict[str, Any]], rv: int) -> dict[str, Any]:
    return {"kind": f"{resource.kind}List", "apiVersion": resource.api_version,
            "metadata": {"resourceVersion": str(rv)}, "items": items}


def scale_of(obj: dict[str, Any]) -> dict[str, Any]:
    """The `scale` subresource's view of a workload (autoscaling/v1 Scale)."""
    meta = obj["metadata"]
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    labels = ((spec.get("selector") or {}).get("matchLabels")) or {}
    return {
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in meta},
        "spec": {"replicas": int(spec.get("replicas", 1))},
        "status": {"replicas": int(status.get("replicas", 0)),
                   "selector": ",".join(f"{k}={v}" for k, v in sorted(labels.items()))},
    }


def api_group_list(resources: list[Resource]) -> dict[str, Any]:
    groups: dict[str, list[str]] = {}
    for r in resources:
        if r.group and r.version not in groups.setdefault(r.group, []):
            groups[r.group].append(r.version)
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
        {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
         "preferredVersion": {"groupVersion": f"{g}/{vs[-1]}", "version": vs[-1]}}
        for g, vs in groups.items()]}


def resource_list(resources: list[Resource], group: str, version: str) -> dict[str, Any] | None:
    mine = [r for r in resources if r.group == group and r.version == version]
    if not mine:
        return None
    listed = []
    for r in mine:
        listed.append({"name": r.plural, "singularName": r.kind.lower(), "namespaced": r.namespaced,
                       "kind": r.kind, "verbs": VERBS})
        if (r.group, r.plural) in SCALABLE:
            listed.append({"name": f"{r.plural}/scale", "singularName": "", "namespaced": True, "group": "autoscaling",
                           "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]})
        if r.plural == "pods" and not r.group:
            listed.append({"name": "pods/eviction", "singularName": "", "namespaced": True, "group": "policy",
                           "version": "v1", "kind": "Eviction", "verbs": ["create"]})
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version, "resources": listed}
