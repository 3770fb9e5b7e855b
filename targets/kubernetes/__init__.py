"""The Kubernetes target: the same experiments against a real inference namespace, safely.

Nothing is touched unless the kube context is on the allowlist and the namespace is
allowed (never kube-system); replicas are the pods a label selector picks; the endpoint
under test is a URL (Service, Ingress, Gateway) the load generator can reach.
"""

from targets.kubernetes.connection import Connection
from targets.kubernetes.settings import KubeSettings
from targets.kubernetes.target import KubeTarget

__all__ = ["Connection", "KubeSettings", "KubeTarget"]
