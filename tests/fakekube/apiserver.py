"""A small stateful Kubernetes API server over real HTTP (aiohttp), for driving the real
`kubernetes` client in tests without a cluster.

    with FakeKube() as kube:
        api = kubernetes.client.CoreV1Api(kube.api_client())
        ...
        kube.set_eviction("default", "web-0", status=429)
        assert kube.requests(method="POST", path_endswith="/eviction")

It runs its own event loop in a background thread, so synchronous tests can use it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import kubernetes.client
from aiohttp import web

from tests.fakekube.execs import Exec, ExecHandler, default_handler, serve_exec
from tests.fakekube.patches import PatchError, apply_patch
from tests.fakekube.selectors import SelectorError, field_predicate, label_predicate
from tests.fakekube.shapes import (API_VERSIONS, VERSION, api_group_list, list_body, resource_list, scale_of,
                                   status_body, status_response)
from tests.fakekube.store import SCALABLE, Conflict, NotFound, Resource, Store


BODY = web.RequestKey("body", object)


@dataclass(frozen=True)
class Request:
    """One request as the server saw it. `body` is the parsed JSON (None when empty)."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    content_type: str


@dataclass
class EvictionAnswer:
    status: int = 201
    message: str = ""
    times: int | None = None  # answer this many times, then fall back to the default (201)


class FakeKube:
    """The server, its store and its request log. Use as a context manager (or start/stop)."""

    def __init__(self) -> None:
        self.store = Store()
        self._log: list[Request] = []
        self._log_lock = threading.Lock()
        self._evictions: dict[tuple[str, str], EvictionAnswer] = {}
        self._faults: dict[tuple[str, str], list[tuple[int, str]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._wakes: set[asyncio.Event] = set()
        self._closing = False
        self.port = 0
        #: every exec asked for, and what answers it (set by tests).
        self.execs: list[Exec] = []
        self.exec_handler: ExecHandler = default_handler

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FakeKube":
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def serve() -> None:
            self._runner = web.AppRunner(self._app(), handle_signals=False, shutdown_timeout=1)
            await self._runner.setup()
            await web.SockSite(self._runner, sock).start()
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(serve())
            self._loop.run_forever()
            self._loop.close()

        self._thread = threading.Thread(target=run, name="fakekube", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake API server did not start")
        self.store.subscribe(self._wake_watchers)
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self._closing = True
        self._wake_watchers()
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> "FakeKube":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def api_client(self) -> kubernetes.client.ApiClient:
        """A real client pointed at this server (no auth, no TLS). Close it when done."""
        config = kubernetes.client.Configuration(host=self.url)
        return kubernetes.client.ApiClient(config)

    # --- test controls ---------------------------------------------------------------------

    def set_eviction(self, namespace: str, name: str, status: int = 429, message: str = "",
                     times: int | None = None) -> None:
        """How the eviction of this pod is answered: 201 evicts (deletes) it; 429 refuses it as a
        PodDisruptionBudget would; any other code is a plain Status error. `times`: then 201."""
        self._evictions[(namespace, name)] = EvictionAnswer(status, message, times)

    def fail_next(self, method: str, path: str, status: int, message: str = "", times: int = 1) -> None:
        """Answer the next `times` requests of `method` on exactly `path` with a Status error."""
        self._faults.setdefault((method.upper(), path), []).extend([(status, message)] * times)

    def expire_watches(self, through: int | None = None) -> int:
        """Watches from a resourceVersion older than `through` (default: the current one) get
        410 Expired. Returns that resourceVersion."""
        return self.store.compact(through)

    def requests(self, method: str | None = None, path: str | None = None,
                 path_endswith: str | None = None) -> list[Request]:
        with self._log_lock:
            return [r for r in self._log
                    if (method is None or r.method == method.upper())
                    and (path is None or r.path == path)
                    and (path_endswith is None or r.path.endswith(path_endswith))]

    def clear_requests(self) -> None:
        with self._log_lock:
            self._log.clear()

    # seeding helpers: straight into the store, not logged as requests
    def add(self, group: str, version: str, plural: str, obj: dict[str, Any], namespace: str = "") -> dict[str, Any]:
        resource = self.store.resource(group, version, plural, obj.get("kind"))
        return self.store.create(resource, namespace or (obj.get("metadata") or {}).get("namespace", ""), obj)

    def get(self, group: str, version: str, plural: str, name: str, namespace: str = "") -> dict[str, Any]:
        return self.store.get(self.store.resource(group, version, plural), namespace, name)

    def exists(self, group: str, version: str, plural: str, name: str, namespace: str = "") -> bool:
        try:
            self.get(group, version, plural, name, namespace)
            return True
        except NotFound:
            return False

    # --- HTTP ------------------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._logging])
        for prefix, handler in (("/version", self._version), ("/api", self._api_versions), ("/apis", self._api_groups)):
            app.router.add_get(prefix, handler)
            app.router.add_get(prefix + "/", handler)  # the client asks for "/version/", "/api/", "/apis/"
        app.router.add_get("/api/v1/namespaces/{ns}/pods/{pod}/exec", self._exec)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    async def _exec(self, request: web.Request) -> web.StreamResponse:
        ns, pod = request.match_info["ns"], request.match_info["pod"]
        self.store.get(self.store.resource("", "v1", "pods"), ns, pod)  # 404 for a pod that is not there
        e = Exec(ns, pod, request.query.get("container", ""), tuple(request.query.getall("command", [])))
        with self._log_lock:
            self.execs.append(e)
        return await serve_exec(request, e, self.exec_handler)

    @web.middleware
    async def _logging(self, request: web.Request, handler: Any) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        entry = Request(request.method, request.path, dict(parse_qsl(request.query_string, keep_blank_values=True)),
                        body, request.headers.get("Content-Type", ""))
        with self._log_lock:
            self._log.append(entry)
        request[BODY] = body
        queued = self._faults.get((request.method, request.path))
        if queued:
            status, message = queued.pop(0)
            return status_response(status, None, message or "injected by the test")
        try:
            return await handler(request)
        except NotFound as exc:
            return status_response(404, "NotFound", str(exc))
        except Conflict as exc:
            return status_response(409, exc.reason, str(exc))
        except (PatchError, SelectorError, ValueError) as exc:
            return status_response(422 if isinstance(exc, PatchError) else 400,
                                   "Invalid" if isinstance(exc, PatchError) else "BadRequest", str(exc))

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response(VERSION)

    async def _api_versions(self, request: web.Request) -> web.Response:
        return web.json_response(API_VERSIONS)

    async def _api_groups(self, request: web.Request) -> web.Response:
        return web.json_response(api_group_list(self.store.resources()))

    def _resource_list(self, group: str, version: str) -> web.Response:
        body = resource_list(self.store.resources(), group, version)
        if body is None:
            return status_response(404, "NotFound", f"the server could not find {group}/{version}")
        return web.json_response(body)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if parts[:1] == ["api"] and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return status_response(404, "NotFound", f"the server could not find the requested resource ({request.path})")
        watch = request.query.get("watch") in ("true", "1")
        if rest[:1] == ["watch"]:
            watch, rest = True, rest[1:]
        if not rest:
            return self._resource_list(group, version)
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, plural, name, sub = rest[1], rest[2], _at(rest, 3), _at(rest, 4)
        else:
            namespace, plural, name, sub = "", rest[0], _at(rest, 1), _at(rest, 2)
        body = request[BODY]
        resource = self.store.resource(group, version, plural, body.get("kind") if isinstance(body, dict)
                                       and request.method == "POST" and not name else None)
        if name is None:
            return await self._collection(request, resource, namespace, body, watch)
        if sub == "scale" and (resource.group, resource.plural) in SCALABLE:
            return self._scale(request, resource, namespace, name, body)
        if sub == "eviction" and resource.plural == "pods" and request.method == "POST":
            return self._evict(resource, namespace, name, body)
        if sub not in (None, "status"):
            return status_response(404, "NotFound", f"no subresource {sub!r} here")
        return self._item(request, resource, namespace, name, body)

    async def _collection(self, request: web.Request, resource: Resource, namespace: str, body: Any,
                          watch: bool) -> web.StreamResponse:
        if request.method == "POST":
            if not isinstance(body, dict):
                return status_response(400, "BadRequest", "the body of the request was not an object")
            try:
                created = self.store.create(resource, namespace, body)
            except ValueError as exc:
                return status_response(422, "Invalid", str(exc))
            return web.json_response(created, status=201)
        predicate = _predicate(request)
        if request.method == "GET" and watch:
            return await self._watch(request, resource, namespace, predicate)
        if request.method == "GET":
            items, rv = self.store.list(resource, namespace or None, predicate)
            return web.json_response(list_body(resource, items, rv))
        if request.method == "DELETE":
            items, _ = self.store.list(resource, namespace or None, predicate)
            for item in items:
                self.store.delete(resource, item["metadata"].get("namespace", ""), item["metadata"]["name"])
            return web.json_response(list_body(resource, items, self.store.resource_version))
        return status_response(405, "MethodNotAllowed", f"{request.method} is not allowed on a collection")

    def _item(self, request: web.Request, resource: Resource, namespace: str, name: str, body: Any) -> web.Response:
        if request.method == "GET":
            return web.json_response(self.store.get(resource, namespace, name))
        if request.method == "DELETE":
            return web.json_response(self.store.delete(resource, namespace, name))
        if request.method == "PUT":
            if not isinstance(body, dict):
                return status_response(400, "BadRequest", "the body of the request was not an object")
            sent = (body.get("metadata") or {}).get("name")
            if sent and sent != name:
                return status_response(400, "BadRequest", f"the name of the object ({sent}) does not match the URL ({name})")
            return web.json_response(self.store.replace(resource, namespace, name, body))
        if request.method == "PATCH":
            content_type = request.headers.get("Content-Type", "")
            updated = self.store.update(resource, namespace, name, lambda obj: _patched(content_type, obj, body))
            return web.json_response(updated)
        return status_response(405, "MethodNotAllowed", f"{request.method} is not allowed")

    def _scale(self, request: web.Request, resource: Resource, namespace: str, name: str, body: Any) -> web.Response:
        if request.method == "GET":
            return web.json_response(scale_of(self.store.get(resource, namespace, name)))
        if request.method not in ("PATCH", "PUT"):
            return status_response(405, "MethodNotAllowed", f"{request.method} is not allowed on scale")
        content_type = request.headers.get("Content-Type", "")

        def change(obj: dict[str, Any]) -> dict[str, Any]:
            scale = scale_of(obj)
            new = body if request.method == "PUT" else _patched(content_type, scale, body)
            replicas = ((new or {}).get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise PatchError(f"spec.replicas must be a non-negative integer, got {replicas!r}")
            obj.setdefault("spec", {})["replicas"] = replicas
            return obj

        return web.json_response(scale_of(self.store.update(resource, namespace, name, change)))

    def _evict(self, resource: Resource, namespace: str, name: str, body: Any) -> web.Response:
        self.store.get(resource, namespace, name)  # 404 when the pod is gone
        answer = self._evictions.get((namespace, name), EvictionAnswer())
        if answer.times is not None:
            answer.times -= 1
            if answer.times <= 0:
                self._evictions.pop((namespace, name), None)
        if answer.status == 429:
            message = answer.message or "Cannot evict pod as it would violate the pod's disruption budget."
            return status_response(429, "TooManyRequests", message, {"causes": [
                {"reason": "DisruptionBudget",
                 "message": "The disruption budget needs 1 healthy pods and has 1 currently"}]})
        if answer.status >= 400:
            return status_response(answer.status, None,
                                   answer.message or "eviction refused by the test")
        self.store.delete(resource, namespace, name)
        return web.json_response(status_body(201, "", ""), status=201)

    async def _watch(self, request: web.Request, resource: Resource, namespace: str, predicate: Any) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        timeout = float(request.query.get("timeoutSeconds") or 1800)
        deadline = loop.time() + timeout
        sent_rv = request.query.get("resourceVersion") or ""
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await response.prepare(request)

        async def send(type_: str, obj: dict[str, Any]) -> None:
            await response.write(json.dumps({"type": type_, "object": obj}).encode() + b"\n")

        if sent_rv in ("", "0"):
            items, last = self.store.list(resource, namespace or None, predicate)
            for item in items:
                await send("ADDED", item)
        else:
            last = int(sent_rv)
        wake = asyncio.Event()
        self._wakes.add(wake)
        try:
            while not self._closing:
                changes = self.store.changes_since(last)
                if changes is None:
                    await send("ERROR", status_body(410, "Expired", f"too old resource version: {last} "
                                                    f"({self.store.resource_version})"))
                    break
                for change in changes:
                    last = change.resource_version
                    obj = change.object
                    ns = obj.get("metadata", {}).get("namespace", "")
                    if (change.resource.group, change.resource.plural) != (resource.group, resource.plural):
                        continue
                    if namespace and resource.namespaced and ns != namespace:
                        continue
                    if predicate(obj):
                        stamped = dict(obj, apiVersion=resource.api_version, kind=resource.kind)
                        await send(change.type, stamped)
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                wake.clear()
                if self.store.changes_since(last):
                    continue
                try:
                    await asyncio.wait_for(wake.wait(), remaining)
                except asyncio.TimeoutError:
                    pass
        finally:
            self._wakes.discard(wake)
        await response.write_eof()
        return response

    def _wake_watchers(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        for wake in list(self._wakes):
            loop.call_soon_threadsafe(wake.set)


def _at(parts: list[str], index: int) -> str | None:
    return parts[index] if len(parts) > index else None


def _predicate(request: web.Request) -> Any:
    labels = label_predicate(request.query.get("labelSelector"))
    fields = field_predicate(request.query.get("fieldSelector"))
    return lambda obj: labels(obj) and fields(obj)


def _patched(content_type: str, obj: dict[str, Any], body: Any) -> dict[str, Any]:
    new = apply_patch(content_type, obj, body)
    if not isinstance(new, dict):
        raise PatchError("the patch did not leave an object")
    return new
