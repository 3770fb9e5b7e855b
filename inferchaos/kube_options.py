"""The pytest options of `--target kubernetes`, and the settings they make.

Declared and read here so the plugin stays a list of hooks; every value is checked when
the session starts (one line, exit code 2), before anything connects.
"""

from __future__ import annotations

from typing import Any, Callable

from inferchaos.errors import UsageError
from targets.kubernetes.settings import KubeSettings

OPTIONS: tuple[tuple[str, dict], ...] = (
    ("--kubeconfig", {"metavar": "FILE", "help": "kubeconfig (default: in-cluster, else $KUBECONFIG or ~/.kube/config)"}),
    ("--kube-context", {"metavar": "NAME", "help": "kubeconfig context (default: its current one)"}),
    ("--allow-context", {"metavar": "NAME", "action": "append", "default": [],
                         "help": "a context inferchaos may touch (repeatable; or $INFERCHAOS_ALLOW_CONTEXTS)"}),
    ("--namespace", {"metavar": "NS", "help": "the namespace of the inference pods"}),
    ("--allow-namespace", {"metavar": "NS", "action": "append", "default": [],
                           "help": "a namespace inferchaos may touch (repeatable; or $INFERCHAOS_ALLOW_NAMESPACES)"}),
    ("--selector", {"metavar": "LABELS", "help": "the inference pods, e.g. app=vllm"}),
    ("--endpoint", {"metavar": "URL", "help": "the URL under load: a Service, Ingress or Gateway"}),
    ("--container", {"metavar": "NAME", "help": "the server's container for exec faults (default: the first)"}),
    ("--golden-model", {"metavar": "NAME", "help": "the pods serve the reference model NAME: run the golden set"}),
    ("--pipeline-deployment", {"metavar": "NAME", "help": "the feature pipeline's Deployment (pipeline_lag stop)"}),
    ("--dependency", {"metavar": "NAME=HOST", "action": "append", "default": [],
                      "help": "a dependency's host for network faults, e.g. model_store=model-store.ml.svc"}),
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
    base = KubeSettings(namespace=get("--namespace") or "", selector=get("--selector") or "",
                        endpoint=get("--endpoint") or "")
    extra = {
        "kubeconfig": get("--kubeconfig"), "context": get("--kube-context"),
        "container": get("--container"), "golden_model": get("--golden-model"),
        "pipeline_deployment": get("--pipeline-deployment"), "metrics_port": port,
        "dependencies": dependencies,
    }
    allow_c, allow_n = get("--allow-context"), get("--allow-namespace")
    if allow_c:
        extra["allow_contexts"] = tuple(allow_c) + base.allow_contexts
    if allow_n:
        extra["allow_namespaces"] = tuple(allow_n) + base.allow_namespaces
    return KubeSettings(**{**base.__dict__, **extra}).validate()
