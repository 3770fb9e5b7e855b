"""How to reach the API server, as data: the ledger stores it with every undo step, so
`inferchaos recover` can reconnect after the runner died (credentials stay in the
kubeconfig or the service account, never in the ledger)."""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes.client
import kubernetes.config
from kubernetes.client import rest
from kubernetes.config.config_exception import ConfigException
from urllib3.connection import HTTPConnection
from urllib3.exceptions import ReadTimeoutError
from urllib3.util.retry import Retry

from inferchaos.ground.errors import TargetError, UsageError

IN_CLUSTER = "in-cluster"

#: Seconds to open a TCP connection to the API server (each attempt; a refused or timed-out
#: connect is tried twice). An API server that takes longer to accept is as good as down.
CONNECT_TIMEOUT_S = 10.0
#: Seconds to wait for the API server's next bytes on a request that set no timeout of its
#: own. The kubernetes client sets none by default, so a half-open connection (a server, a
#: proxy or a NAT that lost the flow and never answers) blocks a call forever: during an
#: incident that is the kill switch (`revert --all --target kubernetes`) hanging. A healthy
#: API server answers a get, list, patch or delete in well under a second; 30 s is a dead
#: one. A read that timed out is not tried again (the server has the request; another 30 s
#: rarely helps), so one call fails within CONNECT_TIMEOUT_S + READ_TIMEOUT_S.
#: Watches get `timeoutSeconds` + this as their read timeout (the server ends them then);
#: a watch or a `follow` without `timeoutSeconds` only gets the connect timeout (it may be
#: quiet for as long as it likes), and keepalive finds a dead peer under it. A call that
#: passes `_request_timeout` keeps its own. Exec (`stream()`) goes over a websocket, not
#: this pool: none of this applies to it (websocket-client sets keepalive on its socket
#: itself, but nothing bounds its handshake: that is for whoever opens the stream).
READ_TIMEOUT_S = 30.0
#: TCP keepalive on every connection: probe after KEEPALIVE_IDLE_S of silence, every
#: KEEPALIVE_INTERVAL_S, give up after KEEPALIVE_COUNT unanswered probes. An idle pooled
#: connection (or a quiet watch) to a peer that vanished without a FIN or RST is then known
#: dead after ~30 s and replaced before a request is sent on it, instead of that request
#: waiting out READ_TIMEOUT_S; the probes also keep NATs and load balancers from dropping
#: the flow of a long watch. (client-go probes after 30 s, every 15 s, 9 times: ~2.75 min.)
KEEPALIVE_IDLE_S = 15
KEEPALIVE_INTERVAL_S = 5
KEEPALIVE_COUNT = 3


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
        """A new ApiClient: exec needs one of its own (stream() swaps its methods). Every
        request through it has a connect and a read timeout, and its sockets TCP keepalive
        (CONNECT_TIMEOUT_S, READ_TIMEOUT_S, KEEPALIVE_*)."""
        config = kubernetes.client.Configuration()
        try:
            if self.kubeconfig is None:
                kubernetes.config.load_incluster_config(client_configuration=config)
            else:
                kubernetes.config.load_kube_config(config_file=self.kubeconfig, context=self.context,
                                                   client_configuration=config)
        except (ConfigException, OSError) as exc:
            raise TargetError(f"cannot load kube config ({self.context}): {exc}") from None
        config.socket_options = keepalive_socket_options()
        config.retries = _Retries(total=3, connect=1)
        api = kubernetes.client.ApiClient(config)
        api.rest_client.close()
        api.rest_client = _TimedRESTClient(config)
        return api

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


class _Retries(Retry):
    """urllib3's retries (a reset on a pooled connection, a refused connect), except after a
    read timeout: that is raised as it is (ReadTimeoutError), so a silent API server costs
    one READ_TIMEOUT_S, not one per retry."""

    def increment(self, method: str | None = None, url: str | None = None, response: Any = None,
                  error: Exception | None = None, _pool: Any = None,
                  _stacktrace: TracebackType | None = None) -> Retry:
        if isinstance(error, ReadTimeoutError):
            raise error.with_traceback(_stacktrace)
        return super().increment(method, url, response, error, _pool, _stacktrace)


class _TimedRESTClient(rest.RESTClientObject):
    """The client's REST layer with a default timeout for requests that give none: the
    kubernetes client passes `timeout=None` to urllib3 explicitly when a call sets no
    `_request_timeout`, which overrides any default the pool itself has."""

    def request(self, method: str, url: str, headers: Any = None, body: Any = None, post_params: Any = None,
                _request_timeout: Any = None) -> rest.RESTResponse:
        if not _request_timeout:
            _request_timeout = default_timeout(url)
        return super().request(method, url, headers=headers, body=body, post_params=post_params,
                               _request_timeout=_request_timeout)


def keepalive_socket_options() -> list[tuple[int, int, int]]:
    """urllib3's own defaults (TCP_NODELAY: a list given replaces them) plus keepalive."""
    options = [*HTTPConnection.default_socket_options, (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE_S), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
                        ("TCP_KEEPCNT", KEEPALIVE_COUNT)):
        if hasattr(socket, name):  # Linux has all three; macOS names the idle time TCP_KEEPALIVE
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    return options


def default_timeout(url: str) -> tuple[float, float | None]:
    """(connect, read) seconds for a request to `url` that set no timeout of its own."""
    query = parse_qs(urlsplit(url).query)
    if query.get("watch", [""])[0].lower() in ("true", "1") or query.get("follow", [""])[0].lower() in ("true", "1"):
        try:
            server_ends = float(query["timeoutSeconds"][0])
        except (KeyError, ValueError):
            return CONNECT_TIMEOUT_S, None
        return CONNECT_TIMEOUT_S, server_ends + READ_TIMEOUT_S
    return CONNECT_TIMEOUT_S, READ_TIMEOUT_S
