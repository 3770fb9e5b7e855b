"""Single API operations that faults apply and undo steps replay.

Each takes a `Connection` (data, from the ledger when `inferchaos recover` runs) and does
one thing idempotently: uncordoning an uncordoned node, removing a taint that is not
there, deleting what is gone — all succeed quietly, so an undo can run twice.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream

from inferchaos.ground.errors import FaultError, UsageError
from inferchaos.targets.kubernetes.connection import Connection

def _core(conn: Connection) -> client.CoreV1Api:
    return client.CoreV1Api(conn.api_client())


def _gone(exc: ApiException) -> bool:
    return exc.status == 404


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


def _node_agent(pod: client.V1Pod) -> bool:
    """A DaemonSet's pod (kube-proxy, CNI, device plugin, DCGM exporter) or a static pod runs
    on every node, tolerates a cordon and the NoSchedule taint, and is no other tenant."""
    meta = pod.metadata
    if "kubernetes.io/config.mirror" in (meta.annotations or {}):
        return True
    return any(ref.kind == "DaemonSet" for ref in meta.owner_references or [])


def tenants(conn: Connection, nodes: list[str]) -> dict[str, list[str]]:
    """node -> every pod bound to it, in every namespace ("ns/name"): who else a cordon, a
    taint or the node's loss would hit. Needs list on pods cluster-wide (the spot component)."""
    found: dict[str, list[str]] = {n: [] for n in nodes}
    for node in nodes:
        try:
            pods = _core(conn).list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}")
        except ApiException as exc:
            raise FaultError(f"cannot list the pods on node {node} (who else runs there): {exc.status} "
                             f"{_message(exc)}; the spot component (deploy/components/spot-faults) grants it") from None
        found[node] = sorted(f"{p.metadata.namespace}/{p.metadata.name}" for p in pods.items
                             if not (p.status and p.status.phase in ("Succeeded", "Failed")) and not _node_agent(p))
    return found


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
def read_scale(conn: Connection, namespace: str, deployment: str) -> client.V1Scale:
    try:
        return client.AppsV1Api(conn.api_client()).read_namespaced_deployment_scale(deployment, namespace)
    except ApiException as exc:
        if _gone(exc):
            raise UsageError(f"no Deployment {deployment} in namespace {namespace}") from None
        if exc.status == 403:  # deploy/'s RBAC names the one Deployment the runner may scale
            raise UsageError(f"the runner may not read Deployment {deployment}'s scale in {namespace} (403): its "
                             "role names the feature pipeline's Deployment it may scale; check "
                             "--pipeline-deployment") from None
        raise FaultError(f"deployment {deployment}: cannot read its scale: {exc.status} {exc.reason}") from None


def replicas_of(conn: Connection, namespace: str, deployment: str) -> int:
    return int(read_scale(conn, namespace, deployment).spec.replicas or 0)


def deployment_pods(conn: Connection, namespace: str, deployment: str) -> tuple[str, list[str]]:
    """The Deployment's pod selector (its scale's `status.selector`, the form the API
    server serialises it in) and the pods it selects now: whose fleet a scale-down takes."""
    selector = read_scale(conn, namespace, deployment).status.selector or ""
    try:
        pods = client.CoreV1Api(conn.api_client()).list_namespaced_pod(namespace, label_selector=selector).items
    except ApiException as exc:
        raise FaultError(f"deployment {deployment}: cannot list its pods: {exc.status} {exc.reason}") from None
    return selector, sorted(p.metadata.name for p in pods)


def scale(conn: Connection, namespace: str, deployment: str, replicas: int) -> str:
    try:
        client.AppsV1Api(conn.api_client()).patch_namespaced_deployment_scale(
            deployment, namespace, {"spec": {"replicas": int(replicas)}})
    except ApiException as exc:
        if _gone(exc):
            return f"deployment {deployment}: gone"
        raise FaultError(f"deployment {deployment}: scale refused: {exc.status} {_message(exc)}") from None
    return f"deployment {deployment}: scaled to {int(replicas)}"


def deployment_annotations(conn: Connection, namespace: str, deployment: str) -> dict[str, str] | None:
    """A Deployment's annotations (None when it is gone): what an undo reads before acting,
    since only a Deployment carrying the run's own mark is the run's to scale back."""
    try:
        d = client.AppsV1Api(conn.api_client()).read_namespaced_deployment(deployment, namespace)
    except ApiException as exc:
        if _gone(exc):
            return None
        raise FaultError(f"deployment {deployment}: cannot read it: {exc.status} {_message(exc)}") from None
    return dict((d.metadata.annotations if d.metadata else None) or {})


def annotate_deployment(conn: Connection, namespace: str, deployment: str, marks: dict[str, str | None]) -> None:
    """Merge-patch annotations (None removes one): who changed it, until when, back to what."""
    try:
        client.AppsV1Api(conn.api_client()).patch_namespaced_deployment(
            deployment, namespace, {"metadata": {"annotations": marks}})
    except ApiException as exc:
        if not _gone(exc):
            raise FaultError(f"deployment {deployment}: cannot mark it: {exc.status} {_message(exc)}") from None


def create_custom(conn: Connection, group: str, version: str, namespace: str, plural: str, body: dict) -> None:
    try:
        client.CustomObjectsApi(conn.api_client()).create_namespaced_custom_object(
            group, version, namespace, plural, body)
    except ApiException as exc:
        raise FaultError(f"{plural} {body['metadata']['name']}: create refused: {exc.status} {_message(exc)}") from None


def delete_custom(conn: Connection, group: str, version: str, namespace: str, plural: str, name: str,
                  wait_s: float = 30.0) -> str:
    try:
        client.CustomObjectsApi(conn.api_client()).delete_namespaced_custom_object(
            group, version, namespace, plural, name)
    except ApiException as exc:
        if _gone(exc):
            return f"{plural} {name}: already gone"
        raise FaultError(f"{plural} {name}: delete refused: {exc.status} {_message(exc)}") from None
    # Chaos Mesh's finalizer holds the object until its daemon removed the rules from the pods:
    # only its disappearance says the traffic is clean again
    deadline = time.monotonic() + wait_s
    while get_custom(conn, group, version, namespace, plural, name) is not None:
        if time.monotonic() > deadline:
            raise FaultError(f"{plural} {name}: still there {wait_s:g} s after its delete (a finalizer: is the "
                             "Chaos Mesh controller running?); its effect may still be applied")
        time.sleep(0.5)
    return f"{plural} {name}: deleted"


def get_custom(conn: Connection, group: str, version: str, namespace: str, plural: str, name: str) -> dict | None:
    try:
        return client.CustomObjectsApi(conn.api_client()).get_namespaced_custom_object(
            group, version, namespace, plural, name)
    except ApiException as exc:
        if _gone(exc):
            return None
        raise FaultError(f"{plural} {name}: cannot read it: {exc.status} {_message(exc)}") from None


def list_custom(conn: Connection, group: str, version: str, namespace: str, plural: str) -> list[dict]:
    try:
        return client.CustomObjectsApi(conn.api_client()).list_namespaced_custom_object(
            group, version, namespace, plural)["items"]
    except ApiException as exc:
        if _gone(exc):
            return []
        raise FaultError(f"cannot list {plural}.{group}: {exc.status} {_message(exc)}") from None


def service_pods(conn: Connection, namespace: str, service: str) -> list[str]:
    """The running pods a Service selects (by its own selector, read from the cluster)."""
    core = _core(conn)
    try:
        svc = core.read_namespaced_service(service, namespace)
    except ApiException as exc:
        if _gone(exc):
            raise UsageError(f"no Service {service} in namespace {namespace}") from None
        raise FaultError(f"service {service}: cannot read it: {exc.status} {_message(exc)}") from None
    selector = (svc.spec.selector if svc.spec else None) or {}
    if not selector:
        raise UsageError(f"Service {service} has no selector: its pods cannot be named")
    pods = core.list_namespaced_pod(namespace, label_selector=",".join(f"{k}={v}" for k, v in selector.items()))
    return sorted(p.metadata.name for p in pods.items
                  if p.status and p.status.phase == "Running" and not p.metadata.deletion_timestamp)


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
