"""The Service under load: which one `--endpoint` reaches, and that it routes to exactly the
pods `--selector` picks.

A verdict judges what the endpoint's users saw; the faults act on the selected pods. If the
two are not the same pods, a run passes with the fault on pods nobody was sending requests
to (or judges pods the fault never touched). So the endpoint is resolved to a Service of the
namespace -- by its DNS name (`name`, `name.ns`, `name.ns.svc[.<cluster domain>]`), its
cluster IP, or its load balancer's address; `--service NAME` names it where the URL is none
of those (a port-forward, an Ingress or a Gateway) -- and that Service's own selector must
pick the same pods. Anything else is one line, exit 2, before anything is injected.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from inferchaos.ground.errors import TargetError, UsageError


def named_by_dns(host: str, namespace: str) -> str | None:
    """The Service a cluster-DNS host names in `namespace`; None when the host is no such name
    (an IP, an Ingress host). A `.svc` name of another namespace is refused."""
    try:
        ipaddress.ip_address(host)
        return None  # an address: matched against the Services' own
    except ValueError:
        pass
    parts = host.lower().rstrip(".").split(".")
    if len(parts) == 1:
        return parts[0] if parts[0] not in ("", "localhost") else None
    if len(parts) >= 3 and parts[2] == "svc" or len(parts) == 2 and parts[1] == namespace:
        if parts[1] != namespace:
            raise UsageError(f"--endpoint host {host} is Service {parts[0]} of namespace {parts[1]}, not of "
                             f"{namespace}: its pods are not the ones under test")
        return parts[0]
    return None


def _addresses(svc: client.V1Service) -> set[str]:
    spec, status = svc.spec, svc.status
    found = {ip for ip in [*((spec.cluster_ips if spec else None) or []), *((spec.external_ips if spec else None) or [])]
             if ip}
    if spec and spec.cluster_ip and spec.cluster_ip != "None":
        found.add(spec.cluster_ip)
    for ing in ((status.load_balancer.ingress if status and status.load_balancer else None) or []):
        found |= {a.lower() for a in (ing.ip, ing.hostname) if a}
    return found


def _pods_selected_by(core: client.CoreV1Api, namespace: str, selector: dict[str, str]) -> set[str]:
    label = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    try:
        pods = core.list_namespaced_pod(namespace, label_selector=label).items
    except ApiException as exc:
        raise TargetError(f"cannot list the pods Service selector {label} picks: {exc.status} {exc.reason}") from None
    except (Urllib3Error, OSError) as exc:
        raise TargetError(f"cannot list the pods of {namespace}: {exc}") from None
    return {p.metadata.name for p in pods if not p.metadata.deletion_timestamp
            and not (p.status and p.status.phase in ("Succeeded", "Failed"))}


def tie(core: client.CoreV1Api, namespace: str, endpoint: str, service: str | None, selector: str,
        picked: set[str]) -> str:
    """The Service's name, once its own selector is shown to pick exactly `picked`."""
    host = urlsplit(endpoint).hostname or ""
    try:
        services = core.list_namespaced_service(namespace).items
    except ApiException as exc:
        raise TargetError(f"cannot list the Services of {namespace} to find the one --endpoint reaches: "
                          f"{exc.status} {exc.reason}") from None
    except (Urllib3Error, OSError) as exc:
        raise TargetError(f"cannot list the Services of {namespace}: {exc}") from None
    by_name = {s.metadata.name: s for s in services}
    name = service or named_by_dns(host, namespace)
    if name is None:
        name = next((n for n, s in sorted(by_name.items()) if host.lower() in _addresses(s)), None)
    if name is None:
        raise UsageError(f"--endpoint {endpoint} is not a Service of {namespace} (by DNS name, cluster IP or load "
                         "balancer address): give --service NAME, the Service it reaches through a port-forward, "
                         "an Ingress or a Gateway")
    svc = by_name.get(name)
    if svc is None:
        raise UsageError(f"no Service {name} in namespace {namespace} (named by "
                         f"{'--service' if service else '--endpoint'}; a port-forward, an Ingress or a Gateway "
                         "is named with --service NAME)")
    own = (svc.spec.selector if svc.spec else None) or {}
    if not own:
        raise UsageError(f"Service {name} has no selector: the pods it routes to cannot be checked against "
                         f"--selector {selector}")
    routes = _pods_selected_by(core, namespace, own)
    if routes != picked:
        def said(pods: set[str]) -> str:
            return ", ".join(sorted(pods)) or "no pod"
        raise UsageError(f"Service {name} (the endpoint) routes to {said(routes)}; --selector {selector} picks "
                         f"{said(picked)}: the verdict would judge pods other than the ones the faults act on; "
                         "select the Service's pods")
    return name
