"""A TCP proxy with toxics (latency, jitter, bandwidth, stall, reset), in the spirit of Toxiproxy.

It sits between the replicas and their dependencies (model store, feature store), so a
fault can slow, stall or break the path to a dependency while the process behind it keeps
its state and its health: that is how a saturated object store or a flaky network looks
from a replica. Toxics are per route, change at runtime over a small HTTP API, and reach
the connections already open as well as new ones, because a fault that only hits new
connections would miss a replica's keep-alive pool.

Run: python -m inferchaos.targets.local.depproxy --control-port P --route NAME=LISTEN:HOST:PORT ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import re
import signal
import socket
import struct
import sys
import time
from dataclasses import asdict, dataclass, fields
from functools import partial
from typing import Any, Mapping
from urllib.parse import quote

import httpx
from aiohttp import web

#: (listen port, upstream host, upstream port); listen port 0 picks a free one.
RouteSpec = tuple[int, str, int]
CHUNK = 64 * 1024
#: Downstream bytes one connection may hold in its delay line before it stops reading upstream.
MAX_BUFFERED = 4 * 1024 * 1024
#: A bandwidth-limited connection sends this much time's worth of bytes at a time (and may
#: burst that much again after idling), so the rate is smooth at any chunk size.
BANDWIDTH_SLICE_S = 0.02
CONNECT_TIMEOUT_S = 5.0
NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")


def _check_number(key: str, value: object, allow_inf: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        hint = ' or "inf"' if allow_inf else ""
        raise ValueError(f"{key} must be a number{hint}, got {value!r}")
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise ValueError(f"{key} must be a finite number, got {value!r}")
    if value < 0:
        raise ValueError(f"{key} must be >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Toxics:
    """What a route does to its traffic; the defaults are a clean pass-through.

    Latency, jitter and bandwidth act downstream (dependency → client), where a slow
    store hurts; stall and reset act on both directions. Bandwidth is per connection,
    as in Toxiproxy. `stall_s` counts from the moment the toxics are set; inf = until cleared.
    """

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    bandwidth_kbs: float | None = None
    stall_s: float = 0.0
    reset: bool = False

    def __post_init__(self) -> None:
        if self.stall_s == "inf":
            object.__setattr__(self, "stall_s", math.inf)
        for key in ("latency_ms", "jitter_ms", "stall_s"):
            object.__setattr__(self, key, _check_number(key, getattr(self, key), key == "stall_s"))
        if self.bandwidth_kbs is not None:
            kbs = _check_number("bandwidth_kbs", self.bandwidth_kbs)
            if kbs == 0:
                raise ValueError("bandwidth_kbs must be > 0 (null = unlimited; stall_s stops traffic)")
            object.__setattr__(self, "bandwidth_kbs", kbs)
        if not isinstance(self.reset, bool):
            raise ValueError(f"reset must be true or false, got {self.reset!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Toxics:
        """Validate a JSON body: missing keys are defaults; anything odd is one ValueError."""
        if not isinstance(data, Mapping):
            raise ValueError(f"toxics must be a JSON object, got {type(data).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown toxic {', '.join(map(repr, unknown))} (known: {', '.join(known)})")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if math.isinf(self.stall_s):
            data["stall_s"] = "inf"
        return data

    @property
    def active(self) -> bool:
        return self != Toxics()


class Route:
    """One listener and its upstream, holding the toxics every connection of it obeys."""

    def __init__(self, name: str, listen_port: int, upstream_host: str, upstream_port: int) -> None:
        self.name, self.listen_port = name, listen_port
        self.upstream_host, self.upstream_port = upstream_host, upstream_port
        self.toxics = Toxics()
        self.stall_until = 0.0
        self.connections: set[_Connection] = set()
        self.accepted = self.bytes_down = self.bytes_up = 0
        self.server: asyncio.Server | None = None
        self._changed = asyncio.Event()

    def set_toxics(self, toxics: Toxics) -> None:
        self.toxics = toxics
        self.stall_until = time.monotonic() + toxics.stall_s if toxics.stall_s > 0 else 0.0
        # Wake every waiter (delay line, stall, bandwidth) so it re-reads the toxics now.
        self._changed.set()
        self._changed = asyncio.Event()
        if toxics.reset:
            for conn in list(self.connections):
                conn.close(rst=True)
        what = json.dumps(toxics.to_dict()) if toxics.active else "cleared"
        print(f"depproxy: route {self.name}: toxics {what}", flush=True)

    def stall_left(self) -> float:
        return max(0.0, self.stall_until - time.monotonic())

    async def changed(self, timeout: float) -> None:
        """Wait until the toxics change or `timeout` passes (inf: only the change)."""
        event = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), None if math.isinf(timeout) else timeout)

    async def unstalled(self) -> None:
        while (left := self.stall_left()) > 0:
            await self.changed(left)

    def describe(self) -> dict[str, Any]:
        left = self.stall_left()
        return {
            "listen": self.listen_port,
            "upstream": f"{self.upstream_host}:{self.upstream_port}",
            "toxics": self.toxics.to_dict(),
            "stall_left_s": "inf" if math.isinf(left) else round(left, 3),
            "connections": len(self.connections),
            "accepted": self.accepted,
            "bytes_down": self.bytes_down,
            "bytes_up": self.bytes_up,
        }


def _linger_zero(writer: asyncio.StreamWriter) -> None:
    """Make the next close send RST, so the peer sees ECONNRESET rather than EOF."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class _Connection:
    """One client and its upstream: a pump up, and down a delay line with a reader task and
    a writer task, so each chunk is delayed from its own arrival and latency never adds up
    chunk after chunk."""

    def __init__(self, route: Route, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.route, self.client_r, self.client_w = route, reader, writer
        self.upstream_w: asyncio.StreamWriter | None = None
        self.task: asyncio.Task | None = None
        self.tasks: list[asyncio.Task] = []
        self.closed = False
        self.queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        self.buffered = 0
        self.room = asyncio.Event()
        self.room.set()
        self.bw_rate: float | None = None
        self.bw_next = 0.0

    async def run(self) -> None:
        self.task = asyncio.current_task()
        try:
            if self.route.toxics.reset:
                self.close(rst=True)
                return
            await self._proxy()
        finally:
            for task in self.tasks:
                task.cancel()
            self._close_transports()
            self.route.connections.discard(self)
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _proxy(self) -> None:
        route = self.route
        try:
            upstream_r, self.upstream_w = await asyncio.wait_for(
                asyncio.open_connection(route.upstream_host, route.upstream_port), CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError):
            return  # unreachable: the client sees its connection closed
        if self.closed:
            return
        self.tasks = [asyncio.create_task(c) for c in (self._pump_up(), self._read_down(upstream_r), self._write_down())]
        # Done when both directions have seen EOF; any error tears down both.
        await asyncio.wait(self.tasks, return_when=asyncio.FIRST_EXCEPTION)

    def close(self, rst: bool = False) -> None:
        """Abort both sides at once (with RST towards the client when `rst`)."""
        self.closed = True
        if rst:
            _linger_zero(self.client_w)
        self.client_w.transport.abort()
        if self.upstream_w is not None:
            self.upstream_w.transport.abort()
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()

    def _close_transports(self) -> None:
        self.client_w.close()
        if self.upstream_w is not None:
            self.upstream_w.close()

    async def _pump_up(self) -> None:
        route, upstream = self.route, self.upstream_w
        assert upstream is not None
        while data := await self.client_r.read(CHUNK):
            await route.unstalled()
            upstream.write(data)
            await upstream.drain()
            route.bytes_up += len(data)
        await route.unstalled()
        if upstream.can_write_eof():
            upstream.write_eof()

    async def _read_down(self, upstream: asyncio.StreamReader) -> None:
        while True:
            await self.room.wait()
            data = await upstream.read(CHUNK)
            self.queue.put_nowait((time.monotonic(), data))
            if not data:
                return
            self.buffered += len(data)
            if self.buffered >= MAX_BUFFERED:
                self.room.clear()

    async def _write_down(self) -> None:
        # One writer, in order: release times are monotonic without further bookkeeping.
        while True:
            arrived, data = await self.queue.get()
            self.buffered -= len(data)
            if self.buffered < MAX_BUFFERED:
                self.room.set()
            await self._delay(arrived, random.uniform(-1.0, 1.0))
            if not data:
                await self.route.unstalled()
                if self.client_w.can_write_eof():
                    self.client_w.write_eof()
                return
            await self._send(data)

    async def _delay(self, arrived: float, spread: float) -> None:
        """Hold a chunk until arrival + latency ± jitter, under the toxics as they are now."""
        while True:
            toxics = self.route.toxics
            due = arrived + max(0.0, toxics.latency_ms + spread * toxics.jitter_ms) / 1000.0
            left = due - time.monotonic()
            if left <= 0:
                return
            await self.route.changed(left)

    async def _send(self, data: bytes) -> None:
        sent = 0
        while sent < len(data):
            n = await self._allowance(len(data) - sent)
            await self.route.unstalled()
            self.client_w.write(data[sent : sent + n])
            await self.client_w.drain()
            self.route.bytes_down += n
            sent += n

    async def _allowance(self, wanted: int) -> int:
        """Token bucket (as a next-free time): how many bytes may go now, waiting until some may."""
        while True:
            kbs = self.route.toxics.bandwidth_kbs
            now = time.monotonic()
            rate = None if kbs is None else kbs * 1000.0
            if rate != self.bw_rate:
                self.bw_rate, self.bw_next = rate, min(self.bw_next, now)
            if rate is None:
                return wanted
            if self.bw_next <= now:
                n = min(wanted, max(1, int(rate * BANDWIDTH_SLICE_S)))
                self.bw_next = max(self.bw_next, now - BANDWIDTH_SLICE_S) + n / rate
                return n
            await self.route.changed(self.bw_next - now)


class DepProxy:
    """The routes' listeners and the control API, on the running event loop."""

    def __init__(self, routes: Mapping[str, RouteSpec], control_port: int) -> None:
        self.routes = {name: Route(name, *spec) for name, spec in routes.items()}
        self.control_port = control_port
        self._runner: web.AppRunner | None = None
        self._stopping = False

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    async def start(self) -> None:
        """Bind every listener and the control API; ports given as 0 are replaced by the real ones."""
        try:
            for route in self.routes.values():
                route.server = await asyncio.start_server(partial(self._accept, route), "127.0.0.1", route.listen_port)
                route.listen_port = route.server.sockets[0].getsockname()[1]
            self._runner = web.AppRunner(_control_app(self), access_log=None, shutdown_timeout=1.0)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.control_port).start()
            self.control_port = self._runner.addresses[0][1]
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Close the listeners, every connection and the control API."""
        self._stopping = True
        for route in self.routes.values():
            if route.server is not None:
                route.server.close()
        conns = [c for r in self.routes.values() for c in r.connections]
        tasks = [t for c in conns for t in (c.task, *c.tasks) if t is not None]
        for conn in conns:
            conn.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        for route in self.routes.values():
            if route.server is not None:
                await route.server.wait_closed()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _accept(self, route: Route, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        route.accepted += 1
        if self._stopping:
            writer.transport.abort()
            return
        conn = _Connection(route, reader, writer)
        route.connections.add(conn)
        # Cancelled = closed by us (reset, shutdown); 3.11's stream callback must not see it.
        with contextlib.suppress(asyncio.CancelledError):
            await conn.run()


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _control_app(proxy: DepProxy) -> web.Application:
    def lookup(request: web.Request) -> Route:
        name = request.match_info["name"]
        if name not in proxy.routes:
            known = ", ".join(sorted(proxy.routes))
            raise web.HTTPNotFound(text=json.dumps({"error": f"no route named {name!r} (routes: {known})"}),
                                   content_type="application/json")
        return proxy.routes[name]

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def all_routes(_: web.Request) -> web.Response:
        return web.json_response({name: r.describe() for name, r in proxy.routes.items()})

    async def one_route(request: web.Request) -> web.Response:
        return web.json_response(lookup(request).describe())

    async def put_toxics(request: web.Request) -> web.Response:
        route = lookup(request)
        try:
            toxics = Toxics.from_dict(json.loads(await request.text()))
        except json.JSONDecodeError as exc:
            return _error(400, f"body is not JSON: {exc}")
        except ValueError as exc:
            return _error(400, str(exc))
        route.set_toxics(toxics)
        return web.json_response(route.describe())

    async def delete_toxics(request: web.Request) -> web.Response:
        route = lookup(request)
        route.set_toxics(Toxics())
        return web.json_response(route.describe())

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/routes", all_routes)
    app.router.add_get("/routes/{name}", one_route)
    app.router.add_put("/routes/{name}/toxics", put_toxics)
    app.router.add_delete("/routes/{name}/toxics", delete_toxics)
    return app


class ProxyControl:
    """Client of the control API. Every failure is an `httpx.HTTPError`: a connect error
    when the proxy is gone, `httpx.HTTPStatusError` carrying the API's message otherwise."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict | None = None) -> Any:
        # trust_env=False: the API is on loopback, and an HTTP_PROXY must not reroute it.
        response = httpx.request(method, self.url + path, json=body, timeout=self.timeout, trust_env=False)
        if response.is_error:
            try:
                message = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                message = response.text
            raise httpx.HTTPStatusError(f"{method} {path}: {response.status_code} {message}",
                                        request=response.request, response=response)
        return response.json()

    def routes(self) -> dict[str, dict]:
        return self._call("GET", "/routes")

    def route(self, name: str) -> dict:
        return self._call("GET", f"/routes/{quote(name, safe='')}")

    def set_toxics(self, name: str, toxics: Toxics) -> dict:
        return self._call("PUT", f"/routes/{quote(name, safe='')}/toxics", toxics.to_dict())

    def clear(self, name: str) -> dict:
        return self._call("DELETE", f"/routes/{quote(name, safe='')}/toxics")


async def serve(routes: Mapping[str, RouteSpec], control_port: int, stop: asyncio.Event | None = None) -> None:
    """Run the proxy until `stop` is set; without one, until SIGTERM or SIGINT."""
    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    proxy = DepProxy(routes, control_port)
    await proxy.start()
    for r in proxy.routes.values():
        print(f"depproxy: route {r.name}: 127.0.0.1:{r.listen_port} -> {r.upstream_host}:{r.upstream_port}", flush=True)
    print(f"depproxy: control API on {proxy.control_url}", flush=True)
    try:
        await stop.wait()
    finally:
        print("depproxy: stopping", flush=True)
        await proxy.stop()


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
    return int(text)


def _route_arg(text: str) -> tuple[str, RouteSpec]:
    name, _, rest = text.partition("=")
    listen, _, upstream = rest.partition(":")
    host, _, port = upstream.rpartition(":")
    if not NAME_RE.fullmatch(name) or not host:
        raise argparse.ArgumentTypeError(f"expected NAME=LISTEN_PORT:UPSTREAM_HOST:UPSTREAM_PORT, got {text!r}")
    return name, (_port(listen), host, _port(port))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m inferchaos.targets.local.depproxy",
                                     description="TCP proxy with toxics in front of the cluster's dependencies.")
    parser.add_argument("--control-port", type=_port, required=True, help="port of the control API")
    parser.add_argument("--route", type=_route_arg, action="append", required=True,
                        metavar="NAME=LISTEN_PORT:UPSTREAM_HOST:UPSTREAM_PORT", help="repeatable")
    args = parser.parse_args(argv)
    names = [name for name, _ in args.route]
    ports = [spec[0] for _, spec in args.route if spec[0]] + ([args.control_port] if args.control_port else [])
    if len(set(names)) != len(names):
        parser.error("route names must be unique")
    if len(set(ports)) != len(ports):
        parser.error("listen ports (and the control port) must all differ")
    args.routes = dict(args.route)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        asyncio.run(serve(args.routes, args.control_port))
    except OSError as exc:  # a port taken between allocation and bind
        print(f"depproxy: cannot listen: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
