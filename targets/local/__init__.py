"""The embedded local cluster: reference replicas, stores, pipeline and HAProxy on loopback."""

from inferchaos.targets.local.cluster import LocalCluster, wait_for
from inferchaos.targets.local.spec import ClusterSpec

__all__ = ["ClusterSpec", "LocalCluster", "wait_for"]
