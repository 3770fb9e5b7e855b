"""What the operator allows, and the checks that hold before anything is touched.

Chaos on the wrong cluster is the one mistake this tool must make impossible: the context
must be named on an allowlist (`--allow-context`, or $INFERCHAOS_ALLOW_CONTEXTS), the
namespace on another (`--allow-namespace`, or $INFERCHAOS_ALLOW_NAMESPACES), and system
namespaces are refused whatever the lists say.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from inferchaos.errors import UsageError

SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})
ALLOW_CONTEXTS_ENV = "INFERCHAOS_ALLOW_CONTEXTS"
ALLOW_NAMESPACES_ENV = "INFERCHAOS_ALLOW_NAMESPACES"
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
    allow_contexts: tuple[str, ...] = field(default_factory=lambda: _env_list(ALLOW_CONTEXTS_ENV))
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
        if not re.match(r"^https?://[^\s/]+", self.endpoint or ""):
            raise UsageError(f"--endpoint {self.endpoint!r}: expected the URL under test, e.g. "
                             "http://vllm.inference.svc:8000")
        return self

    def check_context(self, context: str) -> None:
        """Called once the context is known (in-cluster or from the kubeconfig)."""
        if context not in self.allow_contexts:
            allowed = ", ".join(self.allow_contexts) or "none"
            raise UsageError(f"kube context {context!r} is not on the allowlist ({allowed}): name it with "
                             f"--allow-context {context} (or ${ALLOW_CONTEXTS_ENV}) to let inferchaos touch it")
