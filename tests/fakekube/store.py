"""The fake API server's state: objects by (group, version, plural, namespace, name), one
resourceVersion counter, and the change history that watches replay.

Thread-safe: the aiohttp handlers run in the server's thread, tests seed and inspect from theirs.
"""

from __future__ import annotations

import copy
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

Key = tuple[str, str, str, str, str]  # group, version, plural, namespace ("" if cluster-scoped), name


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


BUILTIN = [
    Resource("", "v1", "pods", "Pod"),
    Resource("", "v1", "nodes", "Node", namespaced=False),
    Resource("", "v1", "namespaces", "Namespace", namespaced=False),
    Resource("", "v1", "events", "Event"),
    Resource("", "v1", "services", "Service"),
    Resource("", "v1", "endpoints", "Endpoints"),
    Resource("", "v1", "configmaps", "ConfigMap"),
    Resource("", "v1", "secrets", "Secret"),
    Resource("", "v1", "serviceaccounts", "ServiceAccount"),
    Resource("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim"),
    Resource("apps", "v1", "deployments", "Deployment"),
    Resource("apps", "v1", "replicasets", "ReplicaSet"),
    Resource("apps", "v1", "statefulsets", "StatefulSet"),
    Resource("apps", "v1", "daemonsets", "DaemonSet"),
    Resource("batch", "v1", "jobs", "Job"),
    Resource("batch", "v1", "cronjobs", "CronJob"),
    Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget"),
    Resource("autoscaling", "v1", "horizontalpodautoscalers", "HorizontalPodAutoscaler"),
    Resource("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler"),
    Resource("events.k8s.io", "v1", "events", "Event"),
    Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice"),
    Resource("chaos-mesh.org", "v1alpha1", "networkchaos", "NetworkChaos"),
    Resource("chaos-mesh.org", "v1alpha1", "iochaos", "IOChaos"),
    Resource("chaos-mesh.org", "v1alpha1", "podchaos", "PodChaos"),
    Resource("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject"),
    Resource("monitoring.coreos.com", "v1", "prometheusrules", "PrometheusRule"),
]
SCALABLE = {("apps", "deployments"), ("apps", "replicasets"), ("apps", "statefulsets")}
#: kinds whose registry deletes gracefully (a delete strategy with CheckGracefulDelete): pods.
GRACEFUL = {("", "pods")}
DEFAULT_TERMINATION_GRACE_S = 30  # what the API defaults spec.terminationGracePeriodSeconds to


class Conflict(Exception):
    """Create of an existing name (AlreadyExists) or a stale resourceVersion (Conflict)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class NotFound(Exception):
    pass


class Invalid(Exception):
    """A write the registry's validation refuses (422 Invalid), worded as it words it."""


@dataclass(frozen=True)
class Change:
    resource_version: int
    type: str  # ADDED, MODIFIED, DELETED
    resource: Resource
    object: dict[str, Any]
    #: the object before a MODIFIED: a label-selector watch needs it to tell an object that
    #: left the selection (DELETED to that watcher) from one that joined it (ADDED).
    previous: dict[str, Any] | None = None


def _now() -> str:
    return _rfc3339(datetime.now(timezone.utc))


rfc3339_now = _now  # for the server's own timestamps (conditions)


def _rfc3339(moment: datetime) -> str:
    """metav1.Time on the wire: RFC 3339 in UTC, whole seconds."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def pod_grace_period(pod: dict[str, Any], requested: int | None) -> int:
    """podStrategy.CheckGracefulDelete: the grace asked for, else the pod's
    terminationGracePeriodSeconds; 0 for a pod never scheduled (no kubelet to stop it) or
    already Succeeded/Failed; a negative one becomes 1."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    period = requested if requested is not None else spec.get("terminationGracePeriodSeconds",
                                                                   DEFAULT_TERMINATION_GRACE_S)
    if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
        period = 0
    return 1 if period < 0 else int(period)


@dataclass(frozen=True)
class Deletion:
    """The outcome of a graceful DELETE: what it answers, and whether the object is gone."""

    object: dict[str, Any]  # the object as it stands (terminating) or as it was removed
    removed: bool
    remaining_s: float = 0.0  # until the grace period ends, while it is still there


class Store:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._objects: dict[Key, dict[str, Any]] = {}
        self._resources: dict[tuple[str, str, str], Resource] = {}
        self._rv = 0
        self._history: list[Change] = []
        self._compacted = 0
        self._listeners: list[Callable[[], None]] = []
        for resource in BUILTIN:
            self.register(resource)

    def clone(self) -> Store:
        """A copy to run a dry run against (`?dryRun=All`): the same objects, kinds and
        resourceVersion, no history and no listeners, so nothing it does is persisted or seen."""
        with self._lock:
            twin = Store()
            twin._objects = copy.deepcopy(self._objects)
            twin._resources = dict(self._resources)
            twin._rv, twin._compacted = self._rv, self._rv
            return twin

    # --- resources -------------------------------------------------------------------------

    def register(self, resource: Resource) -> None:
        """Declare a resource (a CRD, say); unknown plurals are otherwise taken as namespaced CRs."""
        with self._lock:
            self._resources[(resource.group, resource.version, resource.plural)] = resource

    def resource(self, group: str, version: str, plural: str, kind: str | None = None) -> Resource:
        with self._lock:
            found = self._resources.get((group, version, plural))
            if found is None:
                found = Resource(group, version, plural, kind or plural.rstrip("s").capitalize())
                if kind:
                    self._resources[(group, version, plural)] = found
            return found

    def served(self, group: str, version: str, plural: str) -> bool:
        """Built in, or installed (a CRD seeded with `add`): an API server answers 404 for the rest."""
        with self._lock:
            return (group, version, plural) in self._resources

    def resources(self) -> list[Resource]:
        with self._lock:
            return list(self._resources.values())

    # --- watch plumbing --------------------------------------------------------------------

    def subscribe(self, wake: Callable[[], None]) -> Callable[[], None]:
        with self._lock:
            self._listeners.append(wake)
        return lambda: self._unsubscribe(wake)

    def _unsubscribe(self, wake: Callable[[], None]) -> None:
        with self._lock:
            if wake in self._listeners:
                self._listeners.remove(wake)

    def _record(self, type_: str, resource: Resource, obj: dict[str, Any],
                previous: dict[str, Any] | None = None) -> None:
        self._history.append(Change(self._rv, type_, resource, copy.deepcopy(obj), copy.deepcopy(previous)))
        for wake in list(self._listeners):
            wake()

    @property
    def resource_version(self) -> int:
        with self._lock:
            return self._rv

    def compact(self, through: int | None = None) -> int:
        """Forget history up to `through` (default: now). A watch from an older resourceVersion
        is then answered 410 Expired, as after etcd compaction."""
        with self._lock:
            self._compacted = self._rv if through is None else through
            self._history = [c for c in self._history if c.resource_version > self._compacted]
            return self._compacted

    def changes_since(self, rv: int) -> list[Change] | None:
        """Changes after rv, or None when rv is older than the compacted history (410)."""
        with self._lock:
            if rv < self._compacted:
                return None
            return [c for c in self._history if c.resource_version > rv]

    # --- objects ---------------------------------------------------------------------------

    @staticmethod
    def key(resource: Resource, namespace: str, name: str) -> Key:
        return (resource.group, resource.version, resource.plural, namespace if resource.namespaced else "", name)

    def _peers(self, resource: Resource) -> list[tuple[str, str]]:
        """Versions of the same group/plural share storage (autoscaling v1 and v2 HPAs)."""
        return [(r.group, r.version) for r in self._resources.values()
                if r.group == resource.group and r.plural == resource.plural]

    def _find(self, resource: Resource, namespace: str, name: str) -> tuple[Key, dict[str, Any]] | None:
        ns = namespace if resource.namespaced else ""
        for group, version in self._peers(resource) or [(resource.group, resource.version)]:
            key = (group, version, resource.plural, ns, name)
            if key in self._objects:
                return key, self._objects[key]
        return None

    def _stamp(self, resource: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        obj["apiVersion"] = resource.api_version
        obj["kind"] = resource.kind
        return obj

    def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any]:
        with self._lock:
            found = self._find(resource, namespace, name)
            if found is None:
                raise NotFound(f'{resource.plural}{"." + resource.group if resource.group else ""} "{name}" not found')
            return self._stamp(resource, found[1])

    def list(self, resource: Resource, namespace: str | None,
             predicate: Callable[[dict[str, Any]], bool] = lambda o: True) -> tuple[list[dict[str, Any]], int]:
        with self._lock:
            peers = set(self._peers(resource)) or {(resource.group, resource.version)}
            items = [
                self._stamp(resource, obj) for (g, v, p, ns, _), obj in sorted(self._objects.items())
                if (g, v) in peers and p == resource.plural
                and (not namespace or not resource.namespaced or ns == namespace)
            ]
            return [o for o in items if predicate(o)], self._rv

    def create(self, resource: Resource, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            obj = copy.deepcopy(obj)
            meta = obj.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            name = meta.get("name")
            if not name:
                raise ValueError("name or generateName is required")
            if resource.namespaced:
                meta["namespace"] = namespace or meta.get("namespace") or "default"
            else:
                meta.pop("namespace", None)
            if self._find(resource, meta.get("namespace", ""), name) is not None:
                what = f'{resource.plural}{"." + resource.group if resource.group else ""}'
                raise Conflict("AlreadyExists", f'{what} "{name}" already exists')
            self._rv += 1
            meta.update(uid=str(uuid.uuid4()), resourceVersion=str(self._rv),
                        creationTimestamp=_now(), generation=1)
            obj = self._stamp(resource, obj)
            self._objects[self.key(resource, meta.get("namespace", ""), name)] = obj
            self._record("ADDED", resource, obj)
            return copy.deepcopy(obj)

    def replace(self, resource: Resource, namespace: str, name: str, obj: dict[str, Any],
                check_version: bool = True) -> dict[str, Any]:
        """PUT: keeps identity (uid, creationTimestamp); a stale resourceVersion is a Conflict."""
        with self._lock:
            found = self._find(resource, namespace, name)
            if found is None:
                raise NotFound(f'{resource.plural} "{name}" not found')
            key, old = found
            sent = (obj.get("metadata") or {}).get("resourceVersion")
            if check_version and sent and sent != old["metadata"]["resourceVersion"]:
                raise Conflict("Conflict", f'Operation cannot be fulfilled on {resource.plural} "{name}": '
                               "the object has been modified; please apply your changes to the latest version and try again")
            obj = self._stamp(resource, obj)
            meta = obj.setdefault("metadata", {})
            # identity, and the deletion once begun: only a DELETE sets or shortens that
            for field in ("uid", "creationTimestamp", "namespace", "name", "deletionTimestamp",
                          "deletionGracePeriodSeconds"):
                if field in old["metadata"]:
                    meta[field] = old["metadata"][field]
            added = [f for f in meta.get("finalizers") or [] if f not in (old["metadata"].get("finalizers") or [])]
            if meta.get("deletionTimestamp") and added:
                listed = ", ".join(f'"{f}"' for f in added)
                raise Invalid(f'{resource.kind} "{name}" is invalid: metadata.finalizers: Forbidden: no new finalizers '
                              f'can be added if the object is being deleted, found new finalizers []string{{{listed}}}')
            generation = old["metadata"].get("generation", 1)
            meta["generation"] = generation + 1 if obj.get("spec") != old.get("spec") else generation
            self._rv += 1
            meta["resourceVersion"] = str(self._rv)
            self._objects[key] = obj
            self._record("MODIFIED", resource, obj, old)
            if meta.get("deletionTimestamp") and not meta.get("finalizers") and not meta.get("deletionGracePeriodSeconds"):
                # the registry's deleteForEmptyFinalizers: the last finalizer gone, nothing waits
                self.delete(resource, namespace, name)
            return copy.deepcopy(obj)

    def update(self, resource: Resource, namespace: str, name: str,
               change: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
        """Read-modify-write under the lock (PATCH and the scale subresource)."""
        with self._lock:
            current = self.get(resource, namespace, name)
            new = change(copy.deepcopy(current))
            new.setdefault("metadata", {})["resourceVersion"] = current["metadata"]["resourceVersion"]
            return self.replace(resource, namespace, name, new)

    def delete(self, resource: Resource, namespace: str, name: str) -> dict[str, Any]:
        with self._lock:
            found = self._find(resource, namespace, name)
            if found is None:
                raise NotFound(f'{resource.plural}{"." + resource.group if resource.group else ""} "{name}" not found')
            key, obj = found
            del self._objects[key]
            self._rv += 1
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = str(self._rv)
            self._record("DELETED", resource, obj)
            return obj

    def delete_gracefully(self, resource: Resource, namespace: str, name: str,
                          grace: int | None) -> Deletion:
        """DELETE as the API server's generic registry does it (rest.BeforeDelete, then
        updateForGracefulDeletionAndFinalizers). For a kind without graceful deletion, remove it
        at once. For a pod: the first delete sets deletionTimestamp = now + grace and
        deletionGracePeriodSeconds (a MODIFIED event) and leaves it there; a later one may only
        shorten the grace; a grace of 0 writes that update and then removes the pod (MODIFIED,
        then DELETED, as a watch on a cluster sees it). Removal at the end of the grace is the
        kubelet's (here FakeKube's) final delete with grace 0."""
        with self._lock:
            found = self._find(resource, namespace, name)
            if found is None:
                raise NotFound(f'{resource.plural}{"." + resource.group if resource.group else ""} "{name}" not found')
            key, current = found
            if (resource.group, resource.plural) not in GRACEFUL:
                if current["metadata"].get("finalizers"):
                    return self._finalizing(resource, key, current)
                return Deletion(self.delete(resource, namespace, name), True)
            obj = copy.deepcopy(current)
            meta = obj["metadata"]
            now = datetime.now(timezone.utc).replace(microsecond=0)
            if meta.get("deletionTimestamp"):
                old = meta.get("deletionGracePeriodSeconds")
                if not old:
                    if meta.get("finalizers"):
                        return Deletion(self._stamp(resource, obj), False)
                    return Deletion(self.delete(resource, namespace, name), True)
                if grace is None or grace >= old:  # pending: a longer grace never extends it
                    left = (_parse_time(meta["deletionTimestamp"]) - now).total_seconds()
                    return Deletion(self._stamp(resource, obj), False, max(0.0, left))
                period = grace
                ends = _parse_time(meta["deletionTimestamp"]) - timedelta(seconds=old) + timedelta(seconds=period)
                if ends < now:  # never into the past; a graceful one stays graceful
                    ends, period = now, (1 if period else 0)
                remaining = (ends - now).total_seconds() if period else 0.0
            else:
                period = pod_grace_period(obj, grace)
                ends, remaining = now + timedelta(seconds=period), float(period)
                if meta.get("generation"):
                    meta["generation"] += 1
            meta["deletionTimestamp"] = _rfc3339(ends)
            meta["deletionGracePeriodSeconds"] = period
            self._rv += 1
            meta["resourceVersion"] = str(self._rv)
            self._objects[key] = obj
            self._record("MODIFIED", resource, obj, current)
            if period == 0:
                if meta.get("finalizers"):
                    return Deletion(copy.deepcopy(obj), False)
                return Deletion(self.delete(resource, namespace, name), True)
            return Deletion(copy.deepcopy(obj), False, max(remaining, 0.0))

    def _finalizing(self, resource: Resource, key: Key, current: dict[str, Any]) -> Deletion:
        """A DELETE of an object that has finalizers (under the lock): it is marked, not
        removed -- deletionTimestamp now, grace 0, a MODIFIED -- and stays, terminating,
        until whoever owns each finalizer removes it (replace() then removes the object).
        A second DELETE changes nothing."""
        if current["metadata"].get("deletionTimestamp"):
            return Deletion(self._stamp(resource, current), False)
        obj = copy.deepcopy(current)
        meta = obj["metadata"]
        meta["deletionTimestamp"] = _rfc3339(datetime.now(timezone.utc).replace(microsecond=0))
        meta["deletionGracePeriodSeconds"] = 0
        if meta.get("generation"):
            meta["generation"] += 1
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        self._objects[key] = obj
        self._record("MODIFIED", resource, obj, current)
        return Deletion(self._stamp(resource, obj), False)
