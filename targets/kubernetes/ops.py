"""Single API operations that faults apply and undo steps replay.

Each takes a `Connection` (data, from the ledger when `inferchaos recover` runs) and does
one thing idempotently: uncordoning an uncordoned node, removing a taint that is not
there, deleting what is gone — all succeed quietly, so an undo can run twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream

from inferchaos.errors import FaultError, UsageError
from targets.kubernetes.connection import Connection

TAINT_KEY = "inferchaos.io/spot-reclaimed"


def _core(conn: Connection) -> client.CoreV1Api:
    return client.CoreV1Api(conn.api_client())


def _gone(exc: ApiException) -> bool:
    return exc.status == 404


# ----------------------------------------------------------------------------- nodes
def cordon(conn: Connection, node: str, on: bool = True) -> str:
    try:
        _core(conn).patch_node(node, {"spec": {"unschedulable": on}})
    except ApiException as exc:
        if _gone(exc):
            return f"node {node}: gone"
        raise FaultError(f"node {node}: {'cordon' if on else 'uncordon'} refused: {exc.status} {exc.reason}") from None
    return f"node {node}: {'cordoned' if on else 'uncordoned'}"


def taint(conn: Connection, node: str, key: str = TAINT_KEY, effect: str = "NoSchedule", on: bool = True) -> str:
    core = _core(conn)
    try:
        current = core.read_node(node).spec.taints or []
    except ApiException as exc:
        if _gone(exc):
            return f"node {node}: gone"
        raise FaultError(f"node {node}: cannot read its taints: {exc.status} {exc.reason}") from None
    kept = [{"key": t.key, "value": t.value, "effect": t.effect} for t in current if t.key != key]
    if on:
        kept.append({"key": key, "value": "true", "effect": effect})
    elif len(kept) == len(current):
        return f"node {node}: no {key} taint"
    try:
        core.patch_node(node, {"spec": {"taints": kept}})
    except ApiException as exc:
        raise FaultError(f"node {node}: taint change refused: {exc.status} {exc.reason}") from None
    return f"node {node}: {'tainted ' + key + ':' + effect if on else 'taint ' + key + ' removed'}"


def delete_node(conn: Connection, node: str) -> str:
    try:
        _core(conn).delete_node(node)
    except ApiException as exc:
        if _gone(exc):
            return f"node {node}: already gone"
        raise FaultError(f"node {node}: delete refused: {exc.status} {exc.reason}") from None
    return f"node {node}: deleted"


# ----------------------------------------------------------------------------- pods
@dataclass(frozen=True)
class Eviction:
    pod: str
    ok: bool
    #: why a refused eviction was refused (a PodDisruptionBudget answers 429).
    detail: str = ""


def evict(conn: Connection, namespace: str, pod: str, grace_s: int) -> Eviction:
    body = client.V1Eviction(metadata=client.V1ObjectMeta(name=pod, namespace=namespace),
                             delete_options=client.V1DeleteOptions(grace_period_seconds=int(grace_s)))
    try:
        _core(conn).create_namespaced_pod_eviction(pod, namespace, body)
    except ApiException as exc:
        if _gone(exc):
            return Eviction(pod, True, "already gone")
        message = _message(exc)
        if exc.status == 429:
            return Eviction(pod, False, f"429 (a PodDisruptionBudget refused it): {message}")
        raise FaultError(f"pod {pod}: eviction refused: {exc.status} {message}") from None
    return Eviction(pod, True)


def delete_pod(conn: Connection, namespace: str, pod: str, grace_s: int = 0) -> str:
    try:
        _core(conn).delete_namespaced_pod(pod, namespace, grace_period_seconds=int(grace_s))
    except ApiException as exc:
        if _gone(exc):
            return f"pod {pod}: already gone"
        raise FaultError(f"pod {pod}: delete refused: {exc.status} {_message(exc)}") from None
    return f"pod {pod}: deleted (grace {int(grace_s)} s)"


def pods_on(conn: Connection, namespace: str, node: str, selector: str) -> list[str]:
    pods = _core(conn).list_namespaced_pod(namespace, label_selector=selector, field_selector=f"spec.nodeName={node}")
    return [p.metadata.name for p in pods.items]


@dataclass(frozen=True)
class ExecResult:
    stdout: str
    stderr: str
    #: None when the API server sent no status (a real one always does).
    ok: bool
    detail: str


def exec_in(conn: Connection, namespace: str, pod: str, container: str, argv: list[str],
            timeout_s: float = 30.0) -> ExecResult:
    """Run `argv` in the container and wait for it. Its own ApiClient: `stream()` swaps the
    request method of the client it is given, which must not be the target's shared one."""
    api = client.CoreV1Api(conn.api_client())
    try:
        resp = stream(api.connect_get_namespaced_pod_exec, pod, namespace, container=container, command=argv,
                      stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
    except ApiException as exc:
        # a refused websocket upgrade comes back as status 0 with the HTTP status in its text
        if _gone(exc) or "Handshake status 404" in str(exc.reason):
            return ExecResult("", "", False, f"pod {pod} is gone")
        raise FaultError(f"pod {pod}: exec {argv[0]} refused: {str(exc.reason).split(' -+-+- ')[0]}") from None
    try:
        resp.run_forever(timeout=timeout_s)
        out, err = resp.read_stdout() or "", resp.read_stderr() or ""
        status = resp.read_channel(3)
    finally:
        resp.close()
    return exec_result(out, err, status)


def exec_result(stdout: str, stderr: str, status_json: str) -> ExecResult:
    """The exec's outcome from its status channel: `{"status": "Success"}`, or a Failure
    whose causes carry the exit code."""
    if not status_json:
        return ExecResult(stdout, stderr, False, "no exit status (timed out?)")
    try:
        status = json.loads(status_json)
    except ValueError:
        return ExecResult(stdout, stderr, False, f"unreadable exit status {status_json[:80]!r}")
    if status.get("status") == "Success":
        return ExecResult(stdout, stderr, True, "exit 0")
    causes = (status.get("details") or {}).get("causes") or []
    code = next((c.get("message") for c in causes if c.get("reason") == "ExitCode"), None)
    return ExecResult(stdout, stderr, False, f"exit {code}" if code else status.get("message", "failed"))


# ----------------------------------------------------------------------------- workloads
def replicas_of(conn: Connection, namespace: str, deployment: str) -> int:
    try:
        scale_ = client.AppsV1Api(conn.api_client()).read_namespaced_deployment_scale(deployment, namespace)
    except ApiException as exc:
        if _gone(exc):
            raise UsageError(f"no Deployment {deployment} in namespace {namespace}") from None
        raise FaultError(f"deployment {deployment}: cannot read its scale: {exc.status} {exc.reason}") from None
    return int(scale_.spec.replicas or 0)


def scale(conn: Connection, namespace: str, deployment: str, replicas: int) -> str:
    try:
        client.AppsV1Api(conn.api_client()).patch_namespaced_deployment_scale(
            deployment, namespace, {"spec": {"replicas": int(replicas)}})
    except ApiException as exc:
        if _gone(exc):
            return f"deployment {deployment}: gone"
        raise FaultError(f"deployment {deployment}: scale refused: {exc.status} {_message(exc)}") from None
    return f"deployment {deployment}: scaled to {int(replicas)}"


def create_custom(conn: Connection, group: str, version: str, namespace: str, plural: str, body: dict) -> None:
    try:
        client.CustomObjectsApi(conn.api_client()).create_namespaced_custom_object(
            group, version, namespace, plural, body)
    except ApiException as exc:
        raise FaultError(f"{plural} {body['metadata']['name']}: create refused: {exc.status} {_message(exc)}") from None


def delete_custom(conn: Connection, group: str, version: str, namespace: str, plural: str, name: str) -> str:
    try:
        client.CustomObjectsApi(conn.api_client()).delete_namespaced_custom_object(
            group, version, namespace, plural, name)
    except ApiException as exc:
        if _gone(exc):
            return f"{plural} {name}: already gone"
        raise FaultError(f"{plural} {name}: delete refused: {exc.status} {_message(exc)}") from None
    return f"{plural} {name}: deleted"


def has_custom(conn: Connection, group: str, version: str, namespace: str, plural: str) -> bool:
    """Is the custom resource installed (Chaos Mesh, KEDA)? A list answering 404 says no."""
    try:
        client.CustomObjectsApi(conn.api_client()).list_namespaced_custom_object(group, version, namespace, plural)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise FaultError(f"cannot tell whether {plural}.{group} is installed: {exc.status} {exc.reason}") from None
    return True


def _message(exc: ApiException) -> str:
    try:
        return json.loads(exc.body).get("message") or exc.reason
    except (TypeError, ValueError):
        return str(exc.reason)
