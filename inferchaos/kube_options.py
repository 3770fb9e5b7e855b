"""The pytest options of `--target kubernetes`, and the settings they make.

Declared and read here so the plugin stays a list of hooks; every value is checked when
the session starts (one line, exit code 2), before anything connects.
"""

from __future__ import annotations

import pytest

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


def add_options(group: pytest.OptionGroup) -> None:
    for name, kwargs in OPTIONS:
        group.addoption(name, **kwargs)


def settings(config: pytest.Config) -> KubeSettings:
    dependencies = {}
    for raw in config.getoption("--dependency"):
        name, sep, host = raw.partition("=")
        if not sep or not name.strip() or not host.strip():
            raise UsageError(f"--dependency {raw!r}: expected NAME=HOST, e.g. model_store=model-store.ml.svc")
        dependencies[name.strip()] = host.strip()
    port = config.getoption("--server-metrics-port")
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        raise UsageError(f"--server-metrics-port {port!r}: expected a port number")
    base = KubeSettings(namespace=config.getoption("--namespace") or "", selector=config.getoption("--selector") or "",
                        endpoint=config.getoption("--endpoint") or "")
    extra = {
        "kubeconfig": config.getoption("--kubeconfig"), "context": config.getoption("--kube-context"),
        "container": config.getoption("--container"), "golden_model": config.getoption("--golden-model"),
        "pipeline_deployment": config.getoption("--pipeline-deployment"), "metrics_port": port,
        "dependencies": dependencies,
    }
    allow_c, allow_n = config.getoption("--allow-context"), config.getoption("--allow-namespace")
    if allow_c:
        extra["allow_contexts"] = tuple(allow_c) + base.allow_contexts
    if allow_n:
        extra["allow_namespaces"] = tuple(allow_n) + base.allow_namespaces
    return KubeSettings(**{**base.__dict__, **extra}).validate()
