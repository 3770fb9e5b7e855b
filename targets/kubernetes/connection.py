"""How to reach the API server, as data: the ledger stores it with every undo step, so
`inferchaos recover` can reconnect after the runner died (credentials stay in the
kubeconfig or the service account, never in the ledger)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import kubernetes.client
import kubernetes.config
from kubernetes.config.config_exception import ConfigException

from inferchaos.errors import TargetError, UsageError

IN_CLUSTER = "in-cluster"


@dataclass(frozen=True)
class Connection:
    #: None: in-cluster service account.
    kubeconfig: str | None = None
    #: the kubeconfig context; IN_CLUSTER when running in a pod.
    context: str = IN_CLUSTER
    #: the kube-system UID the target was pinned to: `recover` refuses to replay an undo
    #: step on a cluster of another identity reached through the same kubeconfig.
    cluster: str | None = None

    @classmethod
    def resolve(cls, kubeconfig: str | None, context: str | None) -> Connection:
        """In-cluster config first (a CronJob's service account), unless a kubeconfig or
        a context was named; then the kubeconfig's named or current context."""
        if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            return cls(None, IN_CLUSTER)
        path = kubeconfig or os.environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)[0]
        path = os.path.expanduser(path)
        if not os.path.isfile(path):
            raise UsageError(f"no kubeconfig at {path} (and not running in a cluster): give --kubeconfig")
        try:
            contexts, current = kubernetes.config.list_kube_config_contexts(config_file=path)
        except (ConfigException, OSError, ValueError) as exc:
            raise UsageError(f"cannot read the kubeconfig {path}: {exc}") from None
        names = [c["name"] for c in contexts]
        chosen = context or (current or {}).get("name")
        if chosen not in names:
            raise UsageError(f"kube context {chosen!r} is not in {path} (it has: {', '.join(names) or 'none'})")
        return cls(path, chosen)

    def api_client(self) -> kubernetes.client.ApiClient:
        """A new ApiClient: exec needs one of its own (stream() swaps its methods)."""
        config = kubernetes.client.Configuration()
        try:
            if self.kubeconfig is None:
                kubernetes.config.load_incluster_config(client_configuration=config)
            else:
                kubernetes.config.load_kube_config(config_file=self.kubeconfig, context=self.context,
                                                   client_configuration=config)
        except (ConfigException, OSError) as exc:
            raise TargetError(f"cannot load kube config ({self.context}): {exc}") from None
        return kubernetes.client.ApiClient(config)

    def pinned(self) -> kubernetes.client.ApiClient:
        """An ApiClient, after checking the cluster is still the one the change was made on."""
        from inferchaos.targets.kubernetes.identity import read_identity

        api = self.api_client()
        if self.cluster is not None:
            found = read_identity(api, self.context)
            if found.uid != self.cluster:
                api.close()
                raise UsageError(f"context {self.context} now reaches cluster {found} (kube-system uid "
                                 f"{found.uid}), not {self.cluster}, the one the change was made on: refused")
        return api

    def to_dict(self) -> dict:
        return asdict(self)
