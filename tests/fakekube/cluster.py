"""A namespace that behaves: nodes, a Deployment whose pods a tiny controller keeps at its
replica count (scheduling new ones on nodes that are neither cordoned nor tainted), and a
feature-pipeline Deployment — so a fault sent through the real client has consequences a
test can see, as on a cluster: an evicted pod is replaced elsewhere, a cordoned node gets
no new pods.
"""

from __future__ import annotations

import itertools
import threading
import time
from datetime import datetime, timezone
from typing import Any

from tests.fakekube.apiserver import FakeKube
from tests.fakekube.execs import Exec, default_handler
from tests.fakekube.store import NotFound

POD = ("", "v1", "pods")
NODE = ("", "v1", "nodes")
DEPLOYMENT = ("apps", "v1", "deployments")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeCluster:
    def __init__(self, fake: FakeKube, namespace: str = "ml", app: str = "ref", replicas: int = 3,
                 nodes: tuple[str, ...] = ("node-a", "node-b", "node-c"), ready_after_s: float = 0.3) -> None:
        self.fake, self.namespace, self.app, self.replicas = fake, namespace, app, replicas
        self.nodes, self.ready_after_s = nodes, ready_after_s
        self._names = itertools.count(1)
        self._born: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-controller", daemon=True)

    @property
    def selector(self) -> str:
        return f"app={self.app}"

    def seed(self) -> FakeCluster:
        f = self.fake
        f.add("", "v1", "namespaces", {"metadata": {"name": self.namespace}})
        for node in self.nodes:
            f.add(*NODE, {"metadata": {"name": node, "labels": {"node.kubernetes.io/instance-type": "g5.xlarge"}},
                          "spec": {}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
        for name, labels, replicas in ((self.app, {"app": self.app}, self.replicas),
                                       ("feature-pipeline", {"app": "feature-pipeline"}, 1)):
            f.add(*DEPLOYMENT, {"metadata": {"name": name, "namespace": self.namespace, "labels": labels},
                                "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                                         "template": {"metadata": {"labels": labels},
                                                      "spec": {"containers": [{"name": "server", "image": "ref:1"}]}}}},
                  self.namespace)
        for _ in range(self.replicas):
            self._create_pod(ready=True)
        return self

    def start(self) -> FakeCluster:
        self.fake.exec_handler = self.kubelet
        self._thread.start()
        return self

    def kubelet(self, e: Exec) -> tuple[str, str, int]:
        """What exec'd commands do to the pod, as its kubelet would report it: a stopped
        server fails its readiness probe, a GPU hog OOM-kills the server's container."""
        if e.argv[:2] == ("kill", "-STOP"):
            self._set_ready(e.pod, False)
        elif e.argv[:2] == ("kill", "-CONT"):
            self._set_ready(e.pod, True)
        elif e.argv[:2] == ("sh", "-c") and "faults.gpu_hog" in e.argv[2]:
            self._oom_kill(e.pod)
        return default_handler(e)

    def _oom_kill(self, name: str) -> None:
        def change(pod: dict[str, Any]) -> dict[str, Any]:
            pod["status"]["conditions"] = [{"type": "Ready", "status": "False", "lastTransitionTime": _now()}]
            for cs in pod["status"].get("containerStatuses", []):
                cs.update(ready=False, restartCount=cs.get("restartCount", 0) + 1,
                          lastState={"terminated": {"exitCode": 137, "reason": "OOMKilled"}})
            return pod

        self.fake.store.update(self.fake.store.resource(*POD), self.namespace, name, change)
        self._born[name] = time.monotonic()  # the controller marks it ready again after ready_after_s

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def __enter__(self) -> FakeCluster:
        return self.seed().start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ what tests read
    def pods(self) -> list[dict[str, Any]]:
        store = self.fake.store
        items, _ = store.list(store.resource(*POD), self.namespace,
                              lambda o: o["metadata"].get("labels", {}).get("app") == self.app)
        return items

    def node(self, name: str) -> dict[str, Any]:
        return self.fake.get(*NODE, name)

    def ready_pods(self) -> list[str]:
        return [p["metadata"]["name"] for p in self.pods() if _ready(p)]

    # ------------------------------------------------------------------ the controller
    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.reconcile()
            except NotFound:
                continue

    def reconcile(self) -> None:
        want = self.fake.get(*DEPLOYMENT, self.app, self.namespace)["spec"].get("replicas", 0)
        pods = self.pods()
        for p in pods:
            name = p["metadata"]["name"]
            if name in self._born and not _ready(p) and time.monotonic() - self._born[name] >= self.ready_after_s:
                del self._born[name]
                self._set_ready(name)
        missing = want - len(pods)
        for _ in range(max(0, missing)):
            self._create_pod(ready=False)
        for p in pods[want:] if missing < 0 else []:
            self.fake.store.delete(self.fake.store.resource(*POD), self.namespace, p["metadata"]["name"])

    def _schedulable(self) -> list[str]:
        ok = []
        for n in self.nodes:
            spec = self.node(n).get("spec", {})
            if spec.get("unschedulable") or any(t.get("effect") in ("NoSchedule", "NoExecute")
                                                for t in spec.get("taints") or []):
                continue
            ok.append(n)
        return ok

    def _create_pod(self, ready: bool) -> None:
        nodes = self._schedulable()
        if not nodes:
            return  # Pending, as on a cluster with no room
        i = next(self._names)
        name = f"{self.app}-{i:03d}"
        status: dict[str, Any] = {"phase": "Running", "podIP": f"10.0.0.{i % 250}",
                                  "containerStatuses": [{"name": "server", "ready": ready, "restartCount": 0,
                                                         "image": "ref:1", "imageID": "", "state": {"running": {}}}],
                                  "conditions": []}
        if ready:
            status["conditions"] = [{"type": "Ready", "status": "True", "lastTransitionTime": _now()}]
        self.fake.add(*POD, {"metadata": {"name": name, "namespace": self.namespace, "labels": {"app": self.app}},
                             "spec": {"nodeName": nodes[i % len(nodes)],
                                      "containers": [{"name": "server", "image": "ref:1"}]},
                             "status": status}, self.namespace)
        if not ready:
            self._born[name] = time.monotonic()

    def _set_ready(self, name: str, ready: bool = True) -> None:
        def change(pod: dict[str, Any]) -> dict[str, Any]:
            pod["status"]["conditions"] = [{"type": "Ready", "status": "True" if ready else "False",
                                            "lastTransitionTime": _now()}]
            for cs in pod["status"].get("containerStatuses", []):
                cs["ready"] = ready
            return pod

        self.fake.store.update(self.fake.store.resource(*POD), self.namespace, name, change)


def _ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in pod.get("status", {}).get("conditions", []))
