"""Every Kubernetes call through `Connection.api_client()` is bounded in time and its socket
has TCP keepalive: a half-open API server (it accepts, reads, never answers) makes a call,
and the kill switch, fail within a deadline with a clear error instead of hanging.

The real client over real sockets: a silent socket server for the half-open case, the fake
API server (tests/fakekube) for what must keep working (a quiet watch, exec over websocket).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
from kubernetes import client, watch
from urllib3.exceptions import ReadTimeoutError

from inferchaos.targets.kubernetes import connection
from inferchaos.targets.kubernetes.connection import Connection
from inferchaos.targets.kubernetes.ops import exec_in
from tests.fakekube import FakeKube
from tests.support.kubeseed import CONTEXT, NS, kubeconfig, seed

REPO = Path(__file__).resolve().parents[2]
#: generous, and still well under a minute: a call must give up after its read timeout (30 s).
DEADLINE_S = 50.0


class SilentServer:
    """A half-open API server: accepts every connection and reads what is sent, never
    writes a byte, never closes. Records what each connection sent."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="silent-apiserver", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[bytes]:
        with self._lock:
            return [r for r in self.received if r]

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:  # the accept timeout, or the socket closed by stop()
                continue
            conn.settimeout(0.2)
            with self._lock:
                self._conns.append(conn)
                self.received.append(b"")
                index = len(self.received) - 1
            threading.Thread(target=self._read, args=(conn, index), daemon=True).start()

    def _read(self, conn: socket.socket, index: int) -> None:
        while not self._stop.is_set():
            try:
                data = conn.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            with self._lock:
                self.received[index] += data

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        with self._lock:
            for c in self._conns:
                c.close()
        self.sock.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    with SilentServer() as server:
        yield server


@pytest.fixture
def fake() -> Iterator[FakeKube]:
    with FakeKube() as server:
        yield server


def test_a_call_and_the_kill_switch_give_up_on_a_half_open_api_server(silent, tmp_path):
    path = kubeconfig(silent, tmp_path)  # type: ignore[arg-type]
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    # the kill switch, in its own process, at the same time as the call below (both wait the read timeout)
    started = time.monotonic()
    kill_switch = subprocess.Popen(
        [sys.executable, "-m", "inferchaos.cli", "revert", "--all", "--target", "kubernetes", "--kubeconfig", str(path),
         "--kube-context", CONTEXT, "--namespace", NS, "--allow-namespace", NS, "--allow-cluster", "any-uid",
         "--ledger", str(tmp_path / "ledger.jsonl")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    try:
        api = Connection(str(path), CONTEXT).api_client()
        t0 = time.monotonic()
        with pytest.raises(ReadTimeoutError) as exc:
            client.CoreV1Api(api).read_namespace("kube-system")
        took = time.monotonic() - t0
        api.close()
        assert connection.READ_TIMEOUT_S - 1 <= took < DEADLINE_S, took
        assert "Read timed out" in str(exc.value) and f"read timeout={connection.READ_TIMEOUT_S}" in str(exc.value)
        out, err = kill_switch.communicate(timeout=max(1.0, DEADLINE_S - (time.monotonic() - started)))
    finally:
        if kill_switch.poll() is None:
            kill_switch.kill()
            kill_switch.wait(10)
    assert time.monotonic() - started < DEADLINE_S
    # bad input's rule: one clear line, exit 2, nothing touched
    assert kill_switch.returncode == 2, out + err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot reach the API server" in lines[0] and "Read timed out" in lines[0], err
    # a read that timed out is not sent again: one request from the call, one from the kill switch
    sent = silent.requests()
    assert len(sent) == 2 and all(r.startswith(b"GET /api/v1/namespaces/kube-system ") for r in sent), sent


def test_a_refused_connection_fails_at_once(tmp_path):
    with SilentServer() as gone:
        path = kubeconfig(gone, tmp_path)  # type: ignore[arg-type]
    api = Connection(str(path), CONTEXT).api_client()  # nothing listens on that port any more
    t0 = time.monotonic()
    with pytest.raises(Exception) as exc:
        client.CoreV1Api(api).read_namespace("kube-system")
    assert time.monotonic() - t0 < 10 and "Connection refused" in str(exc.value)
    api.close()


def pooled_sockets(api: client.ApiClient) -> list[socket.socket]:
    """The sockets of the connections the client's urllib3 pools keep open, as the kernel has them."""
    manager = api.rest_client.pool_manager
    socks = []
    for key in manager.pools.keys():
        pool = manager.pools[key]
        socks += [c.sock for c in list(pool.pool.queue) if c is not None and c.sock is not None]
    return socks


def test_every_connection_has_tcp_keepalive(fake, tmp_path):
    seed(fake, {"node-a": ["web-0"]})
    api = Connection(str(kubeconfig(fake, tmp_path)), CONTEXT).api_client()
    try:
        assert client.CoreV1Api(api).read_namespace("kube-system").metadata.name == "kube-system"
        (sock,) = pooled_sockets(api)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == connection.KEEPALIVE_IDLE_S
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == connection.KEEPALIVE_INTERVAL_S
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == connection.KEEPALIVE_COUNT
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0, "urllib3's own default kept"
        # the kernel's view from outside the process: a keepalive timer on that connection
        assert keepalive_timer_on(sock.getsockname()), "no keepalive timer in /proc/net/tcp"
    finally:
        api.close()


def keepalive_timer_on(local: tuple[str, int]) -> bool:
    """/proc/net/tcp: the connection from `local` has its keepalive timer running (tr 2)."""
    want = f"0100007F:{local[1]:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == want and fields[5].split(":")[0] == "02":
            return True
    return False


def test_a_quiet_watch_outlives_the_default_read_timeout(fake, tmp_path, monkeypatch):
    """A watch that names no `_request_timeout` reads for as long as the server keeps it
    (`timeoutSeconds`) plus the read timeout; the read timeout shortened here so a quiet
    watch longer than it takes seconds, not minutes."""
    seed(fake, {"node-a": ["web-0"]})
    monkeypatch.setattr(connection, "READ_TIMEOUT_S", 1.0)
    api = Connection(str(kubeconfig(fake, tmp_path)), CONTEXT).api_client()
    try:
        core = client.CoreV1Api(api)
        rv = core.list_namespaced_pod(NS).metadata.resource_version
        t0 = time.monotonic()
        events = list(watch.Watch().stream(core.list_namespaced_pod, NS, resource_version=rv, timeout_seconds=3))
        took = time.monotonic() - t0
        assert events == [] and 2.5 <= took < 3 + 1.0 + 5, took  # ended by the server at timeoutSeconds
    finally:
        api.close()


def test_default_timeouts_by_request():
    c, r = connection.CONNECT_TIMEOUT_S, connection.READ_TIMEOUT_S
    assert connection.default_timeout("https://k/api/v1/namespaces/ml/pods/p") == (c, r)
    assert connection.default_timeout("https://k/api/v1/namespaces/ml/pods?watch=true&timeoutSeconds=60") == (c, 60 + r)
    assert connection.default_timeout("https://k/api/v1/namespaces/ml/pods?watch=true") == (c, None)
    assert connection.default_timeout("https://k/api/v1/namespaces/ml/pods/p/log?follow=true") == (c, None)


def test_exec_over_the_websocket_still_works(fake, tmp_path):
    seed(fake, {"node-a": ["web-0"]})
    fake.exec_handler = lambda e: ("hello\n", "", 0)
    result = exec_in(Connection(str(kubeconfig(fake, tmp_path)), CONTEXT), NS, "web-0", "server", ["echo", "hello"])
    assert result.ok and result.stdout == "hello\n", result
    assert [e.argv for e in fake.execs] == [("echo", "hello")]
