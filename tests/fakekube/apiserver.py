"""A small stateful Kubernetes API server over real HTTP (aiohttp), for driving the real
`kubernetes` client in tests without a cluster.

    with FakeKube() as kube:
        api = kubernetes.client.CoreV1Api(kube.api_client())
        ...
        kube.set_eviction("default", "web-0", status=429)
        assert kube.requests(method="POST", path_endswith="/eviction")

It runs its own event loop in a background thread, so synchronous tests can use it.

Like a real API server it can refuse: with a `Policy` (tests/fakekube/rbac.py) every request
is authenticated by its bearer token and authorised by RBAC (401/403 as the apiserver words
them), and a pod's DELETE or eviction is graceful: the pod stays, terminating, until its
grace period ends or `finalize_pod` (the kubelet, once the containers stopped) removes it.
"""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import kubernetes.client
from aiohttp import web

from tests.fakekube.validation import invalid_on_create
from tests.fakekube.disruption import evict_or_refuse
from tests.fakekube.execs import Exec, ExecHandler, default_handler, serve_exec
from tests.fakekube.patches import PatchError, apply_patch
from tests.fakekube.podsecurity import refusal as pod_security_refusal
from tests.fakekube.rbac import (CONNECT_SUBRESOURCES, Attributes, Authorization, Decision, Policy, is_discovery,
                                 request_attributes)
from tests.fakekube.selectors import SelectorError, field_predicate, label_predicate
from tests.fakekube.shapes import (API_VERSIONS, VERSION, api_group_list, forbidden_response, list_body,
                                   resource_list, scale_of, status_body, status_response, unauthorized_response)
from tests.fakekube.store import SCALABLE, Conflict, Deletion, Invalid, NotFound, Resource, Store, rfc3339_now


BODY = web.RequestKey("body", object)


@dataclass(frozen=True)
class Request:
    """One request as the server saw it. `body` is the parsed JSON (None when empty)."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    content_type: str
    #: time.monotonic() when it arrived: what a request rate is counted over.
    at: float = 0.0


@dataclass
class EvictionAnswer:
    status: int = 201
    message: str = ""
    times: int | None = None  # answer this many times, then fall back to the default (201)


class FakeKube:
    """The server, its store and its request log. Use as a context manager (or start/stop).

    `policy`: enforce RBAC (None: allow everything, as without an authorizer). `tokens`: bearer
    token -> user ("system:serviceaccount:NS:NAME"); with a policy an unknown or missing token
    is 401. `exec_verb`: the cluster version the exec websocket is authorised as: "get" before
    1.35 (GET upgrade -> `get` on pods/exec), "create" from 1.35, where the apiserver checks
    `get` (the GET) and then also `create` (AuthorizePodWebsocketUpgradeCreatePermission).
    """

    def __init__(self, policy: Policy | None = None, tokens: dict[str, str] | None = None,
                 exec_verb: str = "create", tls: bool = False) -> None:
        if exec_verb not in ("get", "create"):
            raise ValueError(f"exec_verb must be 'get' or 'create', not {exec_verb!r}")
        self.policy, self.tokens, self.exec_verb = policy, dict(tokens or {}), exec_verb
        #: serve HTTPS (a certificate made at start, for 127.0.0.1; `ca_path` is its CA), as an
        #: API server does: client-go sends a bearer token only over TLS.
        self.tls, self.ca_path = tls, ""
        #: every authorisation decision on a resource request, allowed or not, in order.
        self.authorizations: list[Authorization] = []
        self._grace_ends: dict[tuple[str, str, str], float] = {}  # (ns, pod, uid) -> loop time
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
        #: how often a watch that allows bookmarks gets one (the watch cache's bookmarkFrequency).
        self.bookmark_every_s = 60.0
        self._watch_epoch = 0
        self._dry = False  # a dry run's handler is running (against a clone of the store)
        #: admission hooks on create: object -> a refusal (code, reason, message) or None.
        self.admission: list[Any] = []
        #: every exec asked for, and what answers it (set by tests).
        self.execs: list[Exec] = []
        self.exec_handler: ExecHandler = default_handler

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def _tls_context(self) -> ssl.SSLContext:
        """A self-signed certificate for 127.0.0.1, made with the openssl CLI (the stdlib makes
        none); it is also the CA a client trusts (`ca_path`)."""
        folder = Path(tempfile.mkdtemp(prefix="fakekube-tls-"))
        key, cert = folder / "key.pem", folder / "cert.pem"
        made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                               "-out", str(cert), "-days", "1", "-subj", "/CN=fakekube",
                               "-addext", "subjectAltName=IP:127.0.0.1"], capture_output=True, text=True, timeout=60)
        if made.returncode != 0:
            raise RuntimeError(f"fake API server: cannot make a TLS certificate: {made.stderr.strip()[-300:]}")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(cert), str(key))
        self.ca_path = str(cert)
        return context

    def start(self) -> "FakeKube":
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        context = self._tls_context() if self.tls else None

        async def serve() -> None:
            self._runner = web.AppRunner(self._app(), handle_signals=False, shutdown_timeout=1)
            await self._runner.setup()
            await web.SockSite(self._runner, sock, ssl_context=context).start()
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
        if self.ca_path:
            shutil.rmtree(Path(self.ca_path).parent, ignore_errors=True)

    def __enter__(self) -> "FakeKube":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def api_client(self, token: str | None = None) -> kubernetes.client.ApiClient:
        """A real client pointed at this server (trusting its certificate when it serves TLS;
        `token` sent as a bearer token, as a service account's is). Close it when done."""
        config = kubernetes.client.Configuration(host=self.url)
        if self.tls:
            config.ssl_ca_cert = self.ca_path
        if token is not None:
            config.api_key = {"BearerToken": token}
            config.api_key_prefix = {"BearerToken": "Bearer"}
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

    def end_watches(self) -> None:
        """Close every open watch stream, as an API server restarting (or a load balancer in
        front of it dropping idle streams) does: clients reconnect from their last version."""
        self._watch_epoch += 1
        self._wake_watchers()

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

    def finalize_pod(self, namespace: str, name: str) -> bool:
        """The kubelet's last word on a terminating pod once its containers have stopped: the
        final delete (grace 0), which removes it before its grace period ends. False when the
        pod is already gone; ValueError when it is not terminating (nothing asked to delete it)."""
        resource = self.store.resource("", "v1", "pods")
        try:
            pod = self.store.get(resource, namespace, name)
        except NotFound:
            return False
        if not pod["metadata"].get("deletionTimestamp"):
            raise ValueError(f"pod {namespace}/{name} is not terminating: only a deleted pod is finalized")
        with self._log_lock:
            self._grace_ends.pop((namespace, name, pod["metadata"].get("uid", "")), None)
        try:
            return self.store.delete_gracefully(resource, namespace, name, 0).removed
        except NotFound:
            return False

    # seeding helpers: straight into the store, not logged as requests
    def add(self, group: str, version: str, plural: str, obj: dict[str, Any], namespace: str = "") -> dict[str, Any]:
        # seeding a kind installs it (a CRD), so the API serves it from then on
        kind = obj.get("kind") or (plural[:-1] if plural.endswith("s") else plural).capitalize()
        resource = self.store.resource(group, version, plural, kind)
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
                        body, request.headers.get("Content-Type", ""), time.monotonic())
        with self._log_lock:
            self._log.append(entry)
        request[BODY] = body
        refused = self._authorize(request)
        if refused is not None:
            return refused
        queued = self._faults.get((request.method, request.path))
        if queued:
            status, message = queued.pop(0)
            return status_response(status, None, message or "injected by the test")
        dry = request.method in ("POST", "PUT", "PATCH", "DELETE") and request.query.get("dryRun") == "All"
        real = self.store
        if dry:  # validated, admitted and answered as ever, against a copy: nothing persisted
            self.store, self._dry = real.clone(), True
        try:
            return await handler(request)
        except NotFound as exc:
            return status_response(404, "NotFound", str(exc))
        except Conflict as exc:
            return status_response(409, exc.reason, str(exc))
        except Invalid as exc:
            return status_response(422, "Invalid", str(exc))
        except (PatchError, SelectorError, ValueError) as exc:
            return status_response(422 if isinstance(exc, PatchError) else 400,
                                   "Invalid" if isinstance(exc, PatchError) else "BadRequest", str(exc))
        finally:
            self.store, self._dry = real, False

    # --- authentication and authorisation --------------------------------------------------

    def _authorize(self, request: web.Request) -> web.Response | None:
        """Authenticate by bearer token, then authorise as kube-apiserver's RBAC would; None
        lets the request through. Without a policy everything passes (and is still recorded)."""
        header = request.headers.get("Authorization", "")
        token = header[len("Bearer "):].strip() if header.startswith("Bearer ") else ""
        user = self.tokens.get(token, "") if token else ""
        if self.policy is not None and not user:
            return unauthorized_response()
        attrs = request_attributes(request.method, request.path, request.query_string)
        if not attrs.resource_request:
            if self.policy is None or is_discovery(attrs.path):
                return None
            return forbidden_response(user, attrs)
        checks = [attrs]
        if (attrs.resource == "pods" and not attrs.group and attrs.subresource in CONNECT_SUBRESOURCES
                and attrs.verb == "get" and self.exec_verb == "create"):
            checks.append(replace(attrs, verb="create"))  # 1.35+: the upgrade also needs create
        for check in checks:
            decision = (self.policy.decide(user, check.verb, check.group, check.resource, check.subresource,
                                           check.namespace, check.name)
                        if self.policy is not None else Decision(True))
            self._record_authorization(user, check, decision.allowed)
            if not decision.allowed:
                return forbidden_response(user, check, decision.reason)
        return None

    def _record_authorization(self, user: str, attrs: Attributes, allowed: bool) -> None:
        with self._log_lock:
            self.authorizations.append(Authorization(user, attrs.verb, attrs.group, attrs.qualified,
                                                     attrs.namespace, attrs.name, allowed))

    async def _version(self, request: web.Request) -> web.Response:
        # the version the exec authorisation models: 1.35 checks create on the websocket upgrade
        minor = "35" if self.exec_verb == "create" else "31"
        return web.json_response(dict(VERSION, minor=minor, gitVersion=f"v1.{minor}.0-fakekube"))

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
        if not self.store.served(group, version, plural):
            return status_response(404, "NotFound", "the server could not find the requested resource")
        body = request[BODY]
        resource = self.store.resource(group, version, plural)
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
            invalid = invalid_on_create(resource, namespace, body, self._namespace_exists)
            if invalid is not None:
                return status_response(invalid.code, invalid.reason, invalid.message)
            if (resource.group, resource.plural) == ("", "pods"):  # Pod Security admission (tests/fakekube/podsecurity.py)
                labels = self.store.get(self.store.resource("", "v1", "namespaces"), "", namespace)["metadata"]
                forbidden = pod_security_refusal(labels.get("labels") or {}, body)
                if forbidden is not None:
                    return status_response(403, "Forbidden", forbidden, {"name": body["metadata"].get("name", ""),
                                                                          "kind": "pods"})
            for admit in self.admission:  # validating webhooks (Chaos Mesh's: tests/fakekube/chaosmesh.py)
                refusal = admit(body)
                if refusal is not None:
                    return status_response(refusal.code, refusal.reason, refusal.message)
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
        if request.method == "DELETE":  # each item as its own DELETE would (pods: gracefully)
            items, _ = self.store.list(resource, namespace or None, predicate)
            grace = _grace_period(request, body)
            answered = []
            for item in items:
                try:
                    answered.append(self._delete(resource, item["metadata"].get("namespace", ""),
                                                 item["metadata"]["name"], grace).object)
                except NotFound:
                    continue
            return web.json_response(list_body(resource, answered, self.store.resource_version))
        return status_response(405, "MethodNotAllowed", f"{request.method} is not allowed on a collection")

    def _namespace_exists(self, namespace: str) -> bool:
        return self.exists("", "v1", "namespaces", namespace)

    def _item(self, request: web.Request, resource: Resource, namespace: str, name: str, body: Any) -> web.Response:
        if request.method == "GET":
            return web.json_response(self.store.get(resource, namespace, name))
        if request.method == "DELETE":  # 200 with the pod, still there while it terminates
            refused = _precondition_failed(self.store.get(resource, namespace, name), body)
            if refused:
                return status_response(409, "Conflict", refused)
            return web.json_response(self._delete(resource, namespace, name, _grace_period(request, body)).object)
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
        answer = self._evictions.get((namespace, name))
        if answer is None:  # no canned answer: the pod's PodDisruptionBudget decides
            refusal = evict_or_refuse(self.store, namespace, name)
            if refusal is not None:
                return status_response(refusal.code, refusal.reason, refusal.message, refusal.details)
            answer = EvictionAnswer()
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
        # as the eviction subresource does it: mark the pod (DisruptionTarget), then delete it
        # with the eviction's deleteOptions, gracefully like any pod DELETE
        self.store.update(resource, namespace, name, _disruption_target)
        options = (body or {}).get("deleteOptions") if isinstance(body, dict) else None
        grace = (options or {}).get("gracePeriodSeconds")
        if grace is not None and (not isinstance(grace, int) or isinstance(grace, bool)):
            return status_response(400, "BadRequest", f"deleteOptions.gracePeriodSeconds must be an integer, got {grace!r}")
        self._delete(resource, namespace, name, grace)
        return web.json_response(status_body(201, "", ""), status=201)

    # --- graceful deletion -------------------------------------------------------------------

    def _delete(self, resource: Resource, namespace: str, name: str, grace: int | None) -> Deletion:
        """A DELETE as the registry does it; a pod left terminating is removed when its grace ends
        (the kubelet's final delete, which a kubelet model may do earlier by `finalize_pod`)."""
        outcome = self.store.delete_gracefully(resource, namespace, name, grace)
        if not outcome.removed and self._loop is not None and not self._dry:
            uid = outcome.object["metadata"].get("uid", "")
            key = (namespace, name, uid)
            end = self._loop.time() + outcome.remaining_s
            with self._log_lock:
                if end < self._grace_ends.get(key, float("inf")):
                    self._grace_ends[key] = end
                    self._loop.call_later(outcome.remaining_s, self._grace_ended, key)
        return outcome

    def _grace_ended(self, key: tuple[str, str, str]) -> None:
        assert self._loop is not None
        with self._log_lock:
            end = self._grace_ends.get(key)
            if end is None:
                return  # finalized, or a shorter grace already ended it
            if self._loop.time() < end - 0.001:
                self._loop.call_later(end - self._loop.time(), self._grace_ended, key)
                return
            del self._grace_ends[key]
        namespace, name, uid = key
        resource = self.store.resource("", "v1", "pods")
        try:
            if self.store.get(resource, namespace, name)["metadata"].get("uid") == uid:
                self.store.delete_gracefully(resource, namespace, name, 0)
        except NotFound:
            pass

    async def _watch(self, request: web.Request, resource: Resource, namespace: str, predicate: Any) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        timeout = float(request.query.get("timeoutSeconds") or 1800)
        deadline = loop.time() + timeout
        sent_rv = request.query.get("resourceVersion") or ""
        bookmarks = request.query.get("allowWatchBookmarks") in ("true", "1")
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await response.prepare(request)

        async def send(type_: str, obj: dict[str, Any]) -> None:
            await response.write(json.dumps({"type": type_, "object": obj}).encode() + b"\n")

        def next_bookmark(now: float) -> float:
            """The cacher's nextBookmarkTime: every bookmarkFrequency, and one 2 s before the
            watch's deadline (never when the client did not ask: allowWatchBookmarks)."""
            at = min(now + self.bookmark_every_s, deadline - 2.0)
            return at if bookmarks and at > now else float("inf")

        if sent_rv in ("", "0"):
            items, last = self.store.list(resource, namespace or None, predicate)
            for item in items:
                await send("ADDED", item)
        else:
            last = int(sent_rv)
        wake = asyncio.Event()
        self._wakes.add(wake)
        bookmark_at = next_bookmark(loop.time())
        epoch = self._watch_epoch
        try:
            while not self._closing and epoch == self._watch_epoch:
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
                    event = _as_seen(change, predicate)
                    if event is not None:
                        type_, seen = event
                        await send(type_, dict(seen, apiVersion=resource.api_version, kind=resource.kind))
                now = loop.time()
                if now >= bookmark_at:
                    await send("BOOKMARK", {"kind": resource.kind, "apiVersion": resource.api_version,
                                            "metadata": {"resourceVersion": str(last)}})
                    bookmark_at = next_bookmark(now)
                remaining = deadline - now
                if remaining <= 0:
                    break
                wake.clear()
                if self.store.changes_since(last):
                    continue
                try:
                    await asyncio.wait_for(wake.wait(), max(0.0, min(remaining, bookmark_at - now)))
                except asyncio.TimeoutError:
                    pass
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away (its watch stopped): nothing to end
        finally:
            self._wakes.discard(wake)
        return response

    def _wake_watchers(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        for wake in list(self._wakes):
            loop.call_soon_threadsafe(wake.set)


def _as_seen(change: Any, predicate: Any) -> tuple[str, dict[str, Any]] | None:
    """What a watch with a selector is told of a change, as the watch cache tells it
    (cacheWatcher.convertToWatchEvent): an object that leaves the selection is DELETED, with
    its previous content at the change's resourceVersion; one that joins it is ADDED."""
    now = predicate(change.object)
    if change.type != "MODIFIED" or change.previous is None:
        return (change.type, change.object) if now else None
    before = predicate(change.previous)
    if now:
        return ("MODIFIED" if before else "ADDED"), change.object
    if before:
        gone = copy.deepcopy(change.previous)
        gone.setdefault("metadata", {})["resourceVersion"] = str(change.resource_version)
        return "DELETED", gone
    return None


def _at(parts: list[str], index: int) -> str | None:
    return parts[index] if len(parts) > index else None


def _precondition_failed(obj: dict[str, Any], body: Any) -> str | None:
    """DeleteOptions.preconditions (uid, resourceVersion) as the registry checks them: a
    mismatch is a 409, worded as kube-apiserver words it."""
    pre = body.get("preconditions") if isinstance(body, dict) else None
    meta = obj.get("metadata") or {}
    for key, field in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
        want = (pre or {}).get(key)
        if want and want != meta.get(key):
            return (f"Precondition failed: {field} in precondition: {want}, {field} in object meta: "
                    f"{meta.get(key)}")
    return None


def _grace_period(request: web.Request, body: Any) -> int | None:
    """DeleteOptions.gracePeriodSeconds as kube-apiserver reads it: from a non-empty body if one
    was sent (the query is then ignored), else from the query."""
    if body is not None:
        grace = body.get("gracePeriodSeconds") if isinstance(body, dict) else None
        if grace is not None and (not isinstance(grace, int) or isinstance(grace, bool)):
            raise ValueError(f"gracePeriodSeconds must be an integer, got {grace!r}")
        return grace
    raw = request.query.get("gracePeriodSeconds")
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"gracePeriodSeconds: invalid value {raw!r}") from None


def _disruption_target(pod: dict[str, Any]) -> dict[str, Any]:
    """The condition the eviction subresource adds before deleting (PodDisruptionConditions)."""
    conditions = pod.setdefault("status", {}).setdefault("conditions", [])
    conditions[:] = [c for c in conditions if c.get("type") != "DisruptionTarget"]
    conditions.append({"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
                       "message": "Eviction API: evicting", "lastTransitionTime": rfc3339_now()})
    return pod


def _predicate(request: web.Request) -> Any:
    labels = label_predicate(request.query.get("labelSelector"))
    fields = field_predicate(request.query.get("fieldSelector"))
    return lambda obj: labels(obj) and fields(obj)


def _patched(content_type: str, obj: dict[str, Any], body: Any) -> dict[str, Any]:
    new = apply_patch(content_type, obj, body)
    if not isinstance(new, dict):
        raise PatchError("the patch did not leave an object")
    return new
