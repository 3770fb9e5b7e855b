"""Which cluster this is, by identity rather than by name.

A kubeconfig context is a name anyone can give any cluster, and every in-cluster
connection is called `in-cluster`: an allowlist of names pins nothing. The kube-system
namespace's UID is minted once, when the cluster is created, and survives renames and
kubeconfig edits, so the allowlist names UIDs (`--allow-cluster UID`, optionally
`UID@https://api-server`), and the identity is the first thing read, before any other request.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from inferchaos.ground.errors import TargetError, UsageError
from inferchaos.targets.kubernetes.settings import ALLOW_CLUSTERS_ENV



@dataclass(frozen=True)
class ClusterIdentity:
    #: the API server's URL as this connection reaches it.
    server: str
    #: metadata.uid of the kube-system namespace.
    uid: str

    def __str__(self) -> str:
        return f"{self.uid}@{self.server}"


def read_identity(api: client.ApiClient, context: str) -> ClusterIdentity:
    server = api.configuration.host
    try:
        ns = client.CoreV1Api(api).read_namespace("kube-system")
    except ApiException as exc:
        if exc.status == 403:
            raise UsageError(f"context {context} ({server}): the runner may not read namespace kube-system, which "
                             "names the cluster (grant get on namespaces: deploy/base/rbac.yaml)") from None
        raise TargetError(f"context {context} ({server}): cannot read the cluster's identity: "
                          f"{exc.status} {exc.reason}") from None
    except (Urllib3Error, OSError) as exc:
        raise UsageError(f"cannot reach the API server of context {context} ({server}): {exc}") from None
    uid = ns.metadata.uid if ns.metadata else None
    if not uid:
        raise TargetError(f"context {context} ({server}): namespace kube-system has no uid")
    return ClusterIdentity(server, uid)


def allowed_clusters(given: tuple[str, ...] = ()) -> tuple[str, ...]:
    env = tuple(x.strip() for x in os.environ.get(ALLOW_CLUSTERS_ENV, "").split(",") if x.strip())
    return tuple(given) + env


def check_identity(identity: ClusterIdentity, allowed: tuple[str, ...], context: str) -> None:
    """An entry `UID` pins the cluster; `UID@URL` also pins the address it is reached at."""
    for entry in allowed:
        uid, _, server = entry.partition("@")
        if uid == identity.uid and (not server or server.rstrip("/") == identity.server.rstrip("/")):
            return
    listed = ", ".join(allowed) or "none"
    raise UsageError(f"cluster {identity.server} (context {context}, kube-system uid {identity.uid}) is not on the "
                     f"allowlist ({listed}): name it with --allow-cluster {identity.uid} "
                     f"(or ${ALLOW_CLUSTERS_ENV}) to let inferchaos touch it")
