"""The pytest options of `--target kubernetes`, and the settings they make.

Declared and read here so the plugin stays a list of hooks; every value is checked when
the session starts (one line, exit code 2), before anything connects.
"""

from __future__ import annotations

from typing import Any, Callable

from inferchaos.ground.errors import UsageError
from inferchaos.targets.kubernetes.settings import KubeSettings

OPTIONS: tuple[tuple[str, dict], ...] = (
    ("--kubeconfig", {"metavar": "FILE", "help": "kubeconfig (default: in-cluster, else $KUBECONFIG or ~/.kube/config)"}),
    ("--kube-context", {"metavar": "NAME", "help": "kubeconfig context (default: its current one)"}),
    ("--allow-cluster", {"metavar": "UID", "action": "append", "default": [],
                         "help": "a cluster inferchaos may touch, by its kube-system namespace UID, optionally "
                                 "UID@https://api-server (repeatable; or $INFERCHAOS_ALLOW_CLUSTERS); a refusal "
                                 "prints the UID"}),
    ("--namespace", {"metavar": "NS", "help": "the namespace of the inference pods"}),
    ("--allow-namespace", {"metavar": "NS", "action": "append", "default": [],
                           "help": "a namespace inferchaos may touch (repeatable; or $INFERCHAOS_ALLOW_NAMESPACES)"}),
    ("--selector", {"metavar": "LABELS", "help": "the inference pods, e.g. app=vllm"}),
    ("--endpoint", {"metavar": "URL", "help": "the URL under load: a Service, Ingress or Gateway"}),
    ("--service", {"metavar": "NAME", "help": "the Service --endpoint reaches when its URL is not the Service's "
                                              "own (a port-forward, an Ingress or a Gateway); it must route to "
                                              "exactly the pods --selector picks (default: read from --endpoint)"}),
    ("--container", {"metavar": "NAME", "help": "the server's container for exec faults (default: the first)"}),
    ("--golden-model", {"metavar": "NAME", "help": "the pods serve the reference model NAME: run the golden set"}),
    ("--pipeline-deployment", {"metavar": "NAME", "help": "the feature pipeline's Deployment (pipeline_lag stop)"}),
    ("--dependency", {"metavar": "NAME=HOST", "action": "append", "default": [],
                      "help": "a dependency's host for network faults, e.g. model_store=model-store.ml.svc"}),
    ("--server-process", {"metavar": "TEXT", "help": "what the server's command line holds, for hang and crash "
                                                     "(default: the container's command in the pod spec)"}),
    ("--allow-shared-nodes", {"action": "store_true", "default": False,
                              "help": "spot faults may cordon a node other workloads share (named in the plan)"}),
    ("--expire-after", {"metavar": "S", "default": "900",
                        "help": "every cluster change expires this many seconds after it was made: chaos and "
                                "a hang end by themselves, node and Deployment marks are undone by `inferchaos "
                                "recover --expired` (deploy/'s sweeper CronJob runs it every 5 minutes; default: %(default)s)"}),
    ("--server-metrics-port", {"metavar": "PORT", "help": "the pods' /metrics port, when pod IPs are reachable"}),
)


def add_options(group: Any) -> None:
    """Into a pytest option group (`addoption`) or an argparse parser (`add_argument`): the
    same options for `pytest --target kubernetes` and `inferchaos plan --target kubernetes`."""
    add = getattr(group, "addoption", None) or group.add_argument
    for name, kwargs in OPTIONS:
        add(name, **kwargs)


def settings(get: Callable[[str], Any]) -> KubeSettings:
    """`get("--namespace")` is the option's value (pytest's `config.getoption`, or argparse's)."""
    dependencies = {}
    for raw in get("--dependency"):
        name, sep, host = raw.partition("=")
        if not sep or not name.strip() or not host.strip():
            raise UsageError(f"--dependency {raw!r}: expected NAME=HOST, e.g. model_store=model-store.ml.svc")
        dependencies[name.strip()] = host.strip()
    port = get("--server-metrics-port")
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        raise UsageError(f"--server-metrics-port {port!r}: expected a port number")
    expire = str(get("--expire-after"))
    if not expire.isdigit() or not 10 <= int(expire) <= 86400:
        raise UsageError(f"--expire-after {expire!r}: expected whole seconds from 10 to 86400")
    base = KubeSettings(namespace=get("--namespace") or "", selector=get("--selector") or "",
                        endpoint=get("--endpoint") or "")
    extra = {
        "kubeconfig": get("--kubeconfig"), "context": get("--kube-context"),
        "container": get("--container"), "golden_model": get("--golden-model"),
        "pipeline_deployment": get("--pipeline-deployment"), "metrics_port": port,
        "dependencies": dependencies, "server_process": get("--server-process"),
        "allow_shared_nodes": bool(get("--allow-shared-nodes")), "expire_after_s": int(expire),
        "service": get("--service"),
    }
    allow_c, allow_n = get("--allow-cluster"), get("--allow-namespace")
    if allow_c:
        extra["allow_clusters"] = tuple(allow_c) + base.allow_clusters
    if allow_n:
        extra["allow_namespaces"] = tuple(allow_n) + base.allow_namespaces
    return KubeSettings(**{**base.__dict__, **extra}).validate()
