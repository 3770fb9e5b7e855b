"""List once, then watch from the list's resourceVersion: client-go's reflector, small.

The engine asks for the fleet's state several times a second; a LIST each time loads the
API server in proportion to the tick, and a real cluster's priority-and-fairness limits
would throttle the runner exactly while it matters. A watch costs one long request per
resource: server-side timeouts of 5-10 min as the reflector picks them, bookmarks so a
reconnect resumes from a recent resourceVersion, a fresh LIST only after 410 Gone.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from kubernetes import watch
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines
from urllib3.exceptions import HTTPError as Urllib3Error

#: client-go's reflector: minWatchTimeout 5 min, times a random factor in [1, 2).
WATCH_TIMEOUT_S = (300, 600)
#: the read timeout past the server's own timeout (bookmarks come at least every minute).
READ_SLACK_S = 30
#: waits after a failed request, doubling up to the last: never a hot loop.
BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)


def _items(listed: Any) -> tuple[list[Any], str]:
    """A typed list (V1PodList) or a custom objects' dict: its items and resourceVersion."""
    if isinstance(listed, dict):
        return list(listed.get("items") or []), str((listed.get("metadata") or {}).get("resourceVersion") or "")
    return list(listed.items or []), str(listed.metadata.resource_version or "")


def name_of(obj: Any) -> str:
    return obj["metadata"]["name"] if isinstance(obj, dict) else obj.metadata.name


@dataclass
class Informer:
    """Keeps `objects` (name -> object as the client deserialises it) current for one
    list call (`list_fn(*args, **kwargs)`): `start()` lists (its errors are the caller's),
    a thread watches. `on_change(type, obj)` is told of each change after `objects` has it
    (type LISTED for each object a relist found, DELETED for each it no longer found)."""

    list_fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    on_change: Callable[[str, Any], None] | None = None
    name: str = "watch"
    timeout_s: tuple[int, int] = WATCH_TIMEOUT_S
    objects: dict[str, Any] = field(default_factory=dict)
    #: LISTs after the first (410 Gone, or the watch unreadable for a while).
    relists: int = 0
    #: events (bookmarks included) read from the watches.
    events: int = 0
    #: why the view may be stale (the last failure); None while the watch is current.
    error: str | None = None
    #: the last answer was 403: the runner may not read these (RBAC), the view is empty.
    forbidden: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _resp: Any = None

    def start(self, wait: bool = True) -> Informer:
        """`wait`: list here, and let its errors out; else list in the thread, retried,
        where a view that may stay empty will do (`forbidden` and `error` say why it is)."""
        rv = self._list() if wait else None
        self._thread = threading.Thread(target=self._run, args=(rv,), name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ends the watch now: the open response is shut, not waited out."""
        self._stop.set()
        resp = self._resp
        if resp is not None:
            try:
                resp.shutdown()
            except Exception:  # noqa: BLE001 - already closed, or an older urllib3: the join still bounds it
                pass
        if self._thread is not None:
            self._thread.join(5)

    def snapshot(self) -> list[Any]:
        with self._lock:
            return list(self.objects.values())

    def _list(self) -> str:
        try:
            items, rv = _items(self.list_fn(*self.args, **self.kwargs))
        except ApiException as exc:
            self.forbidden = exc.status == 403
            raise
        self.forbidden = False
        fresh = {name_of(o): o for o in items}
        with self._lock:
            gone = [o for n, o in self.objects.items() if n not in fresh]
            self.objects = fresh
        for obj in gone:
            self._tell("DELETED", obj)
        for obj in items:
            self._tell("LISTED", obj)
        return rv

    def _tell(self, type_: str, obj: Any) -> None:
        if self.on_change is not None:
            self.on_change(type_, obj)

    def _run(self, rv: str | None) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                if rv is None:
                    rv = self._list()
                began, seen = time.monotonic(), self.events
                rv = self._watch(rv)
                self.error, self.forbidden = None, False
                if self.events > seen or time.monotonic() - began >= 1.0:
                    failures = 0
                    continue
                # a watch ended at once with nothing in it (a proxy closing streams?): back off
                self._stop.wait(BACKOFF_S[min(failures, len(BACKOFF_S) - 1)])
                failures = min(failures + 1, len(BACKOFF_S) - 1)
                continue
            except ApiException as exc:
                self.error = f"watch {self.name}: {exc.status} {exc.reason}"
                self.forbidden = exc.status == 403
                gone = exc.status == 410
            except (Urllib3Error, OSError, ValueError) as exc:
                self.error, gone = f"watch {self.name}: {exc}", False
            if self._stop.is_set():
                return
            self._stop.wait(BACKOFF_S[min(failures, len(BACKOFF_S) - 1)])
            failures += 1
            if rv is not None and (gone or failures >= len(BACKOFF_S)):
                # 410, or out of touch long enough to have missed a compaction
                try:
                    rv = self._list()
                    self.relists += 1
                except (ApiException, Urllib3Error, OSError, ValueError):
                    pass

    def _watch(self, rv: str) -> str:
        """One watch request to its end; the resourceVersion to resume from."""
        w = watch.Watch()
        return_type = w.get_return_type(self.list_fn)
        timeout = random.randint(*self.timeout_s)
        resp = self.list_fn(*self.args, **self.kwargs, watch=True, resource_version=rv, allow_watch_bookmarks=True,
                            timeout_seconds=timeout, _preload_content=False,
                            _request_timeout=(10, timeout + READ_SLACK_S))
        self._resp = resp
        try:
            if self._stop.is_set():
                return rv
            for line in iter_resp_lines(resp):
                event = w.unmarshal_event(line, return_type)
                if not isinstance(event, dict):
                    continue
                if event["type"] == "ERROR":
                    status = event.get("raw_object") or {}
                    raise ApiException(status=status.get("code"),
                                       reason=f"{status.get('reason')}: {status.get('message')}")
                rv = str(w.resource_version or rv)
                self.events += 1
                if event["type"] == "BOOKMARK":
                    continue
                obj, name = event["object"], name_of(event["object"])
                with self._lock:
                    if event["type"] == "DELETED":
                        self.objects.pop(name, None)
                    else:
                        self.objects[name] = obj
                self._tell(event["type"], obj)
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"an unreadable watch event: {exc}") from None
        except (Urllib3Error, OSError):
            if self._stop.is_set():
                return rv  # our own shutdown
            raise
        finally:
            self._resp = None
            resp.release_conn()
        return rv
