"""What the operator allows, and the checks that hold before anything is touched.

Chaos on the wrong cluster is the one mistake this tool must make impossible: the cluster
must be named by identity on an allowlist (`--allow-cluster UID`, or $INFERCHAOS_ALLOW_CLUSTERS:
see `identity`), the namespace on another (`--allow-namespace`, or $INFERCHAOS_ALLOW_NAMESPACES)
and opted in on the cluster itself (label `inferchaos.io/allow-chaos=true`, which the runner
cannot set), and system namespaces are refused whatever the lists say. Selectors must name
pods by value: an existence-only selector (`app`) picks every pod that has the label.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from inferchaos.ground.errors import UsageError

#: Where `--allow-cluster` comes from when the option is not given (the CronJob sets it).
ALLOW_CLUSTERS_ENV = "INFERCHAOS_ALLOW_CLUSTERS"

SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})
ALLOW_NAMESPACES_ENV = "INFERCHAOS_ALLOW_NAMESPACES"
OPT_IN_LABEL = "inferchaos.io/allow-chaos"
SELECTOR = re.compile(r"^[A-Za-z0-9./_-]+(\s*(=|==|!=)\s*[A-Za-z0-9._-]*)?(\s*,\s*[A-Za-z0-9./_-]+"
                      r"(\s*(=|==|!=)\s*[A-Za-z0-9._-]*)?)*$")


def _env_list(name: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in os.environ.get(name, "").split(",") if x.strip())


@dataclass(frozen=True)
class KubeSettings:
    namespace: str
    selector: str
    endpoint: str
    kubeconfig: str | None = None
    context: str | None = None
    #: kube-system namespace UIDs (optionally UID@URL) inferchaos may touch.
    allow_clusters: tuple[str, ...] = field(default_factory=lambda: _env_list(ALLOW_CLUSTERS_ENV))
    allow_namespaces: tuple[str, ...] = field(default_factory=lambda: _env_list(ALLOW_NAMESPACES_ENV))
    #: the container the server runs in (exec faults); default: the pod's first.
    container: str | None = None
    #: the model the pods serve when it is the reference server's (the golden set applies).
    golden_model: str | None = None
    #: the feature pipeline's Deployment (pipeline_lag's fallback without Chaos Mesh).
    pipeline_deployment: str | None = None
    #: the port of the servers' /metrics (queue time), if their pod IPs are reachable from here.
    metrics_port: str | None = None
    #: dependency name (model_store, feature_store) -> its host, for the network faults.
    dependencies: dict[str, str] = field(default_factory=dict)
    #: what the server's command line holds (hang, crash); default: the container's command.
    server_process: str | None = None
    #: a spot fault may cordon a node that other workloads share (they are named in the plan).
    allow_shared_nodes: bool = False
    #: every change made on the cluster undoes itself (or is swept) this long after it was made.
    expire_after_s: int = 900
    #: the Service --endpoint reaches, where the URL is not its own (a port-forward, an Ingress).
    service: str | None = None

    def validate(self) -> KubeSettings:
        if not self.namespace:
            raise UsageError("--target kubernetes needs --namespace")
        if self.namespace in SYSTEM_NAMESPACES:
            raise UsageError(f"namespace {self.namespace} is refused: inferchaos never touches system namespaces")
        if self.namespace not in self.allow_namespaces:
            raise UsageError(f"namespace {self.namespace} is not allowed: name it with --allow-namespace "
                             f"{self.namespace} (or ${ALLOW_NAMESPACES_ENV})")
        if not self.selector or not SELECTOR.match(self.selector):
            raise UsageError(f"--selector {self.selector!r}: expected a label selector like app=vllm,tier=gpu")
        if not equality_terms(self.selector):
            raise UsageError(f"--selector {self.selector!r} names no label value: it would pick every pod that has "
                             "the label; give key=value, e.g. app=vllm")
        if self.service is not None and not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", self.service):
            raise UsageError(f"--service {self.service!r}: expected a Service name (lower-case letters, digits "
                             "and '-', at most 63)")
        if not re.match(r"^https?://[^\s/]+", self.endpoint or ""):
            raise UsageError(f"--endpoint {self.endpoint!r}: expected the URL under test, e.g. "
                             "http://vllm.inference.svc:8000")
        return self


def equality_terms(selector: str) -> dict[str, str]:
    """The key=value terms of a label selector: what a pod must carry to be picked."""
    pairs = {}
    for term in selector.split(","):
        if "!=" in term:
            continue
        key, sep, value = term.replace("==", "=").partition("=")
        if sep and key.strip() and value.strip():
            pairs[key.strip()] = value.strip()
    return pairs
