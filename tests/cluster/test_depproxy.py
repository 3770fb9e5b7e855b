"""The dependency proxy, against real upstream servers over real sockets.

The proxy and the upstreams run on an event loop of their own thread; the tests drive
them with blocking clients, as a replica would. Every fixture checks on teardown that
no connection and no task was left behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Coroutine, Iterator

import httpx
import pytest
from aiohttp import web

from tests.support.waiting import wait_for
from inferchaos.targets.local.depproxy import DepProxy, ProxyControl, Toxics, parse_args
from inferchaos.ground.ports import free_port
from inferchaos.targets.local.processes import end_groups, group_alive

pytestmark = pytest.mark.timeout(60)
REPO = Path(__file__).resolve().parents[2]
MB2 = 2 * 1000 * 1000


def payload(n: int) -> bytes:
    return random.Random(n).randbytes(n)


class LoopThread:
    """An event loop on a thread of its own, driven from the test's thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="depproxy-test-loop")
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> list[asyncio.Task]:
        """Stop the loop; returns the tasks still pending on it (a leak)."""
        async def pending() -> list[asyncio.Task]:
            await asyncio.sleep(0.05)
            return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        left = self.run(pending())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
        return left


async def start_http_upstream() -> web.AppRunner:
    """/ping, /bytes/{n} streamed in 64 KB writes, and POST /echo."""
    async def ping(_: web.Request) -> web.Response:
        return web.Response(text="pong")

    async def data(request: web.Request) -> web.StreamResponse:
        body = payload(int(request.match_info["n"]))
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = len(body)
        await resp.prepare(request)
        for i in range(0, len(body), 64 * 1024):
            await resp.write(body[i : i + 64 * 1024])
        return resp

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read())

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_get("/ping", ping)
    app.router.add_get("/bytes/{n}", data)
    app.router.add_post("/echo", echo)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


async def start_tcp_echo() -> asyncio.Server:
    """Echoes until the client half-closes, then says "bye" and closes: shows EOF both ways."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write(b"bye")
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@dataclass
class Env:
    loop: LoopThread
    proxy: DepProxy
    control: ProxyControl

    def port(self, route: str) -> int:
        return self.proxy.routes[route].listen_port

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.port('http')}", trust_env=False, timeout=10)

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(method, self.proxy.control_url + path, trust_env=False, timeout=5, **kw)

    def set(self, route: str = "http", **toxics: Any) -> dict:
        return self.control.set_toxics(route, Toxics(**toxics))

    def connections(self, route: str = "http") -> int:
        return self.control.route(route)["connections"]


@pytest.fixture
def env() -> Iterator[Env]:
    loop = LoopThread()
    upstream = echo = proxy = None

    async def start() -> DepProxy:
        nonlocal upstream, echo, proxy
        upstream, echo = await start_http_upstream(), await start_tcp_echo()
        proxy = DepProxy({
            "http": (0, "127.0.0.1", upstream.addresses[0][1]),
            "echo": (0, "127.0.0.1", echo.sockets[0].getsockname()[1]),
            "dead": (0, "127.0.0.1", free_port()),
        }, 0)
        await proxy.start()
        return proxy

    async def stop() -> None:
        if proxy is not None:
            await proxy.stop()
        if upstream is not None:
            await upstream.cleanup()
        if echo is not None:
            echo.close()
            await echo.wait_closed()

    open_conns: dict[str, int] = {}
    try:
        loop.run(start())
        yield Env(loop, proxy, ProxyControl(proxy.control_url))
        # A client's close reaches the upstream and comes back as its EOF: give it a moment.
        deadline = time.monotonic() + 2
        while any(r.connections for r in proxy.routes.values()) and time.monotonic() < deadline:
            time.sleep(0.02)
        open_conns = {n: len(r.connections) for n, r in proxy.routes.items() if r.connections}
    finally:
        loop.run(stop())
        left = loop.close()
    assert not open_conns, f"connections left open: {open_conns}"
    assert not left, f"tasks left on the loop: {left}"


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.monotonic()
    result = fn()
    return time.monotonic() - t0, result


def raw_get(port: int, path: str = "/ping") -> socket.socket:
    """A keep-alive HTTP/1.1 connection with one request sent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


# --------------------------------------------------------------------------- Toxics


@pytest.mark.parametrize("body, key", [
    ({"latncy_ms": 5}, "latncy_ms"),
    ({"latency_ms": -1}, "latency_ms"),
    ({"latency_ms": "100"}, "latency_ms"),
    ({"jitter_ms": True}, "jitter_ms"),
    ({"latency_ms": math.inf}, "latency_ms"),
    ({"bandwidth_kbs": 0}, "bandwidth_kbs"),
    ({"bandwidth_kbs": -5.0}, "bandwidth_kbs"),
    ({"stall_s": "forever"}, "stall_s"),
    ({"stall_s": None}, "stall_s"),
    ({"stall_s": math.nan}, "stall_s"),
    ({"reset": 1}, "reset"),
])
def test_from_dict_rejects_bad_values_naming_the_key(body, key):
    with pytest.raises(ValueError, match=key):
        Toxics.from_dict(body)


def test_from_dict_defaults_round_trip_and_inf():
    assert Toxics.from_dict({}) == Toxics() and not Toxics().active
    t = Toxics.from_dict({"latency_ms": 100, "jitter_ms": 500, "bandwidth_kbs": 50, "stall_s": "inf", "reset": True})
    assert t.active and t.stall_s == math.inf and t.jitter_ms > t.latency_ms
    assert t.to_dict() == {"latency_ms": 100.0, "jitter_ms": 500.0, "bandwidth_kbs": 50.0, "stall_s": "inf", "reset": True}
    assert Toxics.from_dict(json.loads(json.dumps(t.to_dict()))) == t
    assert Toxics(stall_s=math.inf).to_dict()["stall_s"] == "inf"
    with pytest.raises(ValueError, match="JSON object"):
        Toxics.from_dict([1])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- data path


def test_pass_through_is_byte_identical_both_ways(env):
    up = payload(1_500_000)
    with env.http() as c:
        assert c.post("/echo", content=up).content == up
        down = c.get(f"/bytes/{MB2}").content
    assert hashlib.sha256(down).digest() == hashlib.sha256(payload(MB2)).digest()
    r = env.control.route("http")
    assert r["bytes_up"] > len(up) and r["bytes_down"] > len(up) + MB2
    assert r["accepted"] == 1
    wait_for(lambda: env.connections() == 0, 3, "the closed client's connection to be freed")


def test_half_close_reaches_each_side_and_frees_the_connection(env):
    with socket.create_connection(("127.0.0.1", env.port("echo")), timeout=5) as s:
        s.sendall(b"hello")
        assert s.recv(100) == b"hello"
        s.shutdown(socket.SHUT_WR)  # the echo server answers our EOF with "bye", then its own EOF
        got = b""
        while chunk := s.recv(100):
            got += chunk
    assert got == b"bye"
    wait_for(lambda: env.connections("echo") == 0, 3, "the echo connection to be freed")


def test_client_gone_mid_download_frees_the_connection(env):
    env.set(bandwidth_kbs=200)
    s = raw_get(env.port("http"), f"/bytes/{MB2}")
    assert s.recv(1000)
    s.close()
    wait_for(lambda: env.connections() == 0, 3, "the abandoned connection to be freed")


def test_unreachable_upstream_closes_the_client(env):
    with socket.create_connection(("127.0.0.1", env.port("dead")), timeout=3) as s:
        s.sendall(b"GET / HTTP/1.1\r\n\r\n")
        t, data = timed(lambda: s.recv(100))
    assert data == b"" and t < 2
    r = env.control.route("dead")
    assert (r["accepted"], r["connections"]) == (1, 0)


def test_latency_is_added_once_per_response_and_reaches_open_connections(env):
    with env.http() as c:
        base_small, _ = timed(lambda: c.get("/ping"))
        base_big, _ = timed(lambda: c.get(f"/bytes/{MB2}"))
        env.set(latency_ms=300)  # the client's keep-alive connection is already open
        small, r = timed(lambda: c.get("/ping"))
        big, rb = timed(lambda: c.get(f"/bytes/{MB2}"))
    assert r.text == "pong" and rb.content == payload(MB2)
    assert 0.3 <= small < 0.3 + base_small + 1.0
    # ~32 chunks of 64 KB: per-chunk latency would add ~10 s, pipelined it adds 0.3 s.
    assert 0.3 <= big < 0.3 + base_big + 1.0


def test_jitter_stays_within_its_bounds(env):
    env.set(latency_ms=150, jitter_ms=100)
    times = []
    for _ in range(8):
        with env.http() as c:  # a fresh connection each time, as well as the same one
            times.append(timed(lambda: c.get("/ping"))[0])
            times.append(timed(lambda: c.get("/ping"))[0])
    assert min(times) >= 0.045, times
    assert max(times) < 0.25 + 0.5, times
    assert max(times) - min(times) > 0.02, f"no jitter at all: {times}"


def test_bandwidth_limits_a_download_to_about_its_rate(env):
    env.set(bandwidth_kbs=250)
    with env.http() as c:
        t, r = timed(lambda: c.get("/bytes/200000"))
    assert r.content == payload(200_000)
    assert 0.6 <= t < 0.8 + 1.0, t  # 200 KB at 250 KB/s: 0.8 s


def test_stall_delays_open_and_new_connections_then_lets_them_finish(env):
    with env.http() as open_client, env.http() as new_client, ThreadPoolExecutor(2) as pool:
        open_client.get("/ping")
        env.set(stall_s=1.0)
        t0 = time.monotonic()
        assert 0.5 < env.control.route("http")["stall_left_s"] <= 1.0
        futures = [pool.submit(c.get, "/ping") for c in (open_client, new_client)]
        results = [f.result(5) for f in futures]
        elapsed = time.monotonic() - t0
        assert [r.text for r in results] == ["pong", "pong"]
        assert 0.9 <= elapsed < 2.0, elapsed
        assert env.control.route("http")["stall_left_s"] == 0
        assert timed(lambda: open_client.get("/ping"))[0] < 0.3


def test_stall_inf_holds_until_cleared(env):
    assert env.set(stall_s=math.inf)["stall_left_s"] == "inf"
    with env.http() as c, ThreadPoolExecutor(1) as pool:
        future = pool.submit(c.get, "/ping")
        time.sleep(0.7)
        assert not future.done()
        assert env.connections() == 1
        cleared = env.control.clear("http")
        t, r = timed(lambda: future.result(5))
    assert r.text == "pong" and t < 0.5
    assert cleared["stall_left_s"] == 0 and cleared["toxics"] == Toxics().to_dict()


def test_reset_breaks_open_and_new_connections_until_cleared(env):
    port = env.port("http")
    kept = raw_get(port)
    assert b"pong" in kept.recv(1000)
    assert env.connections() == 1
    env.set(reset=True)
    with kept, pytest.raises(ConnectionResetError):
        kept.recv(1000)
    with pytest.raises(ConnectionResetError):  # at connect, send or recv: whichever the RST beats
        with raw_get(port) as fresh:
            fresh.recv(1000)
    assert env.connections() == 0
    env.control.clear("http")
    with env.http() as c:
        assert c.get("/ping").text == "pong"


def test_clearing_releases_held_data_and_restores_speed(env):
    env.set(latency_ms=3000)
    with env.http() as c, ThreadPoolExecutor(1) as pool:
        future = pool.submit(timed, lambda: c.get("/ping"))
        time.sleep(0.3)
        env.control.clear("http")
        held, r = future.result(5)
        assert r.text == "pong" and held < 1.0, held
        assert timed(lambda: c.get(f"/bytes/{MB2}"))[0] < 1.0


# --------------------------------------------------------------------------- control API


def test_control_api_errors(env):
    assert env.api("GET", "/health").status_code == 200
    for method, path in [("GET", "/routes/nope"), ("PUT", "/routes/nope/toxics"), ("DELETE", "/routes/nope/toxics")]:
        r = env.api(method, path, json={})
        assert r.status_code == 404 and "nope" in r.json()["error"], (method, r.text)
    for body, needle in [(b"{not json", "not JSON"), (b"[1, 2]", "JSON object"), (b'{"bogus": 1}', "bogus"),
                         (b'{"latency_ms": -3}', "latency_ms must be >= 0"), (b'{"reset": "yes"}', "reset")]:
        r = env.api("PUT", "/routes/http/toxics", content=body)
        assert r.status_code == 400 and needle in r.json()["error"], (body, r.text)
    assert env.control.route("http")["toxics"] == Toxics().to_dict()  # a rejected body changes nothing
    assert env.api("DELETE", "/routes/http/toxics").status_code == 200
    assert env.api("DELETE", "/routes/http/toxics").status_code == 200


def test_proxy_control_client(env):
    routes = env.control.routes()
    assert set(routes) == {"http", "echo", "dead"}
    assert routes["http"]["listen"] == env.port("http")
    assert set(routes["http"]) == {"listen", "upstream", "toxics", "stall_left_s", "connections", "accepted",
                                   "bytes_down", "bytes_up"}
    r = env.control.set_toxics("echo", Toxics(latency_ms=10, bandwidth_kbs=100))
    assert r["toxics"]["latency_ms"] == 10.0 and env.control.route("http")["toxics"]["latency_ms"] == 0.0
    assert env.control.clear("echo")["toxics"] == Toxics().to_dict()
    with pytest.raises(httpx.HTTPStatusError, match="no route named 'nope'"):
        env.control.route("nope")
    with pytest.raises(httpx.ConnectError):
        ProxyControl(f"http://127.0.0.1:{free_port()}", timeout=1).routes()


# --------------------------------------------------------------------------- process entry


@pytest.mark.parametrize("argv", [
    [],
    ["--control-port", "1"],
    ["--control-port", "x", "--route", "a=1:h:2"],
    ["--control-port", "1", "--route", "a=1:h"],
    ["--control-port", "1", "--route", "=1:h:2"],
    ["--control-port", "1", "--route", "a=1:h:99999"],
    ["--control-port", "1", "--route", "a=2:h:3", "--route", "a=4:h:5"],
    ["--control-port", "2", "--route", "a=2:h:3"],
])
def test_bad_arguments_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2 and "usage:" in capsys.readouterr().err


def test_process_serves_logs_changes_and_exits_0_on_sigterm(env, tmp_path):
    control, listen = free_port(), free_port()
    upstream = env.proxy.routes["http"].upstream_port
    log = tmp_path / "depproxy.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "inferchaos.targets.local.depproxy", "--control-port", str(control),
             "--route", f"store=0:127.0.0.1:{free_port()}", "--route", f"http={listen}:127.0.0.1:{upstream}"],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        api = ProxyControl(f"http://127.0.0.1:{control}", timeout=1)

        def up() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return bool(api.routes())
            except httpx.HTTPError:
                return False

        wait_for(up, 10, "the proxy's control API")
        with httpx.Client(trust_env=False, timeout=5) as c:
            assert c.get(f"http://127.0.0.1:{listen}/ping").text == "pong"
        api.set_toxics("http", Toxics(stall_s=math.inf))
        held = socket.create_connection(("127.0.0.1", listen), timeout=5)  # open while we stop it
        wait_for(lambda: api.route("http")["connections"] == 1, 3, "the held connection")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
        assert held.recv(10) == b""
        held.close()
        assert not group_alive(proc.pid)
        text = log.read_text()
        assert 'route http: toxics {"latency_ms": 0.0, "jitter_ms": 0.0, "bandwidth_kbs": null, "stall_s": "inf"' in text
        assert "Traceback" not in text
    finally:
        if proc.poll() is None:
            end_groups([proc.pid], 2)
            proc.wait()


def test_process_bad_route_exits_2():
    proc = subprocess.run([sys.executable, "-m", "inferchaos.targets.local.depproxy", "--control-port", "1", "--route", "oops"],
                          cwd=REPO, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "NAME=LISTEN_PORT:UPSTREAM_HOST:UPSTREAM_PORT" in proc.stderr
