"""The Kubernetes target: the same experiments against a real inference namespace, safely.

Nothing is touched unless the kube context is on the allowlist and the namespace is
allowed (never kube-system); replicas are the pods a label selector picks; the endpoint
under test is a URL (Service, Ingress, Gateway) the load generator can reach.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from inferchaos.targets.kubernetes.connection import Connection
    from inferchaos.targets.kubernetes.settings import KubeSettings
    from inferchaos.targets.kubernetes.target import KubeTarget

__all__ = ["Connection", "KubeSettings", "KubeTarget"]
#: Imported on first use (PEP 562): the kubernetes client is the `kubernetes` extra, and a
#: run on the local cluster must not need it. Settings are plain data and import nothing.
_HOME = {"Connection": "connection", "KubeSettings": "settings", "KubeTarget": "target"}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(f"{__name__}.{_HOME[name]}")
    except ModuleNotFoundError as exc:
        if exc.name != "kubernetes" and not (exc.name or "").startswith("kubernetes."):
            raise
        from inferchaos.ground.errors import UsageError
        raise UsageError("the Kubernetes target needs the kubernetes client: pip install 'inferchaos[kubernetes]'") from exc
    return getattr(module, name)
