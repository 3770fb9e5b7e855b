"""A namespace that behaves: nodes, a Deployment whose pods a tiny controller keeps at its
replica count (scheduling new ones on nodes that are neither cordoned nor tainted), a
feature-pipeline Deployment, and a kubelet (tests/fakekube/kubelet.py) that runs every pod's
containers as real processes in real pid namespaces — so a fault sent through the real
client has the consequences the kernel and a kubelet give it, not the ones our code expects:
an evicted pod is replaced elsewhere, a cordoned node gets no new pods, a SIGSTOPped server
fails its readiness probe, `kill -STOP 1` does nothing.

    with FakeKube() as fake, FakeCluster(fake, namespace="ml") as cluster:
        cluster.kubelet.ip("ml", pod), cluster.serving_port  # where the pod's server listens
        cluster.kubelet.intercept(lambda e: "gpu_hog" in " ".join(e.argv), lambda e: ("", "", 0))

Pods are created Pending and not ready; the kubelet starts them and its probe makes them
Ready. `start()` returns once the seeded pods are Ready (or raises after START_DEADLINE_S).
"""

from __future__ import annotations

import itertools
import threading
import time
from datetime import datetime, timezone
from typing import Any

from tests.fakekube.apiserver import FakeKube
from tests.fakekube.execs import default_handler
from tests.fakekube.kubelet import Kubelet, free_port
from tests.fakekube.store import NotFound

POD = ("", "v1", "pods")
NODE = ("", "v1", "nodes")
DEPLOYMENT = ("apps", "v1", "deployments")
START_DEADLINE_S = 10.0


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeCluster:
    """`share_process_namespace` goes into the Deployment's pod template and its pods: True
    (the reference deployment's choice) puts a pause process at PID 1 of each pod."""

    def __init__(self, fake: FakeKube, namespace: str = "ml", app: str = "ref", replicas: int = 3,
                 nodes: tuple[str, ...] = ("node-a", "node-b", "node-c"), share_process_namespace: bool = True,
                 server_args: tuple[str, ...] = ()) -> None:
        self.fake, self.namespace, self.app, self.replicas = fake, namespace, app, replicas
        #: the container port every pod's server listens on, on the pod's own IP (the
        #: Service's targetPort); free on this machine when the cluster was made.
        self.serving_port = free_port()
        #: the server's arguments in the pod template (container_server.py's options).
        self.server_args = server_args
        self.nodes, self.share_process_namespace = nodes, share_process_namespace
        self.kubelet = Kubelet(fake, nodes)
        self._names = itertools.count(1)
        self._seeded: list[str] | None = None  # the seeded pods' names, once seeded
        self._started = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-controller", daemon=True)

    @property
    def selector(self) -> str:
        return f"app={self.app}"

    def pod_spec(self, node: str) -> dict[str, Any]:
        return {"nodeName": node, "shareProcessNamespace": self.share_process_namespace,
                "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
                "containers": [{"name": "server", "image": "ref:1", "args": list(self.server_args),
                                "ports": [{"name": "http", "containerPort": self.serving_port}]}]}

    def seed(self) -> FakeCluster:
        f = self.fake
        f.add("", "v1", "namespaces", {"metadata": {"name": self.namespace}})
        for node in self.nodes:
            f.add(*NODE, {"metadata": {"name": node, "labels": {"node.kubernetes.io/instance-type": "g5.xlarge"}},
                          "spec": {}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
        for name, labels, replicas in ((self.app, {"app": self.app}, self.replicas),
                                       ("feature-pipeline", {"app": "feature-pipeline"}, 1)):
            template = {k: v for k, v in self.pod_spec("").items() if k != "nodeName"}
            f.add(*DEPLOYMENT, {"metadata": {"name": name, "namespace": self.namespace, "labels": labels},
                                "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                                         "template": {"metadata": {"labels": labels}, "spec": template}}},
                  self.namespace)
        self._seeded = [n for n in (self._create_pod() for _ in range(self.replicas)) if n]
        return self

    def start(self) -> FakeCluster:
        """Start the kubelet and the controller; return once the seeded pods are Ready."""
        self.fake.exec_handler = self.kubelet
        self._started = True
        self.kubelet.start()
        self._thread.start()
        deadline = time.monotonic() + START_DEADLINE_S
        seeded = set(self._seeded or ())
        while seeded - set(self.ready_pods()):
            if time.monotonic() > deadline:
                waiting = sorted(seeded - set(self.ready_pods()))
                logs = {n: self.kubelet.logs(self.namespace, n)[-600:] for n in waiting}
                self.stop()
                raise RuntimeError(f"fake cluster: pods {waiting} not Ready after {START_DEADLINE_S} s; "
                                   f"container logs: {logs}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """Stop the controller, then the kubelet: every container process is killed and reaped."""
        if not self._started:
            return
        self._started = False
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.kubelet.stop()
        self.fake.exec_handler = default_handler

    def __enter__(self) -> FakeCluster:
        """Seeds and starts what is not yet: `with FakeCluster(...)`, or `with cluster.start()`
        after seeding (and adding objects) by hand."""
        if self._seeded is None:
            self.seed()
        return self if self._started else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ what tests read
    def pods(self) -> list[dict[str, Any]]:
        store = self.fake.store
        items, _ = store.list(store.resource(*POD), self.namespace,
                              lambda o: o["metadata"].get("labels", {}).get("app") == self.app)
        return items

    def pod(self, name: str) -> dict[str, Any]:
        return self.fake.get(*POD, name, self.namespace)

    def node(self, name: str) -> dict[str, Any]:
        return self.fake.get(*NODE, name)

    def ready_pods(self) -> list[str]:
        return [p["metadata"]["name"] for p in self.pods() if _ready(p)]

    def port(self, pod: str) -> int | None:
        """The port the pod's server listens on (on its IP: `address`), per its kubelet."""
        return self.kubelet.port(self.namespace, pod)

    def address(self, pod: str) -> tuple[str, int] | None:
        ip, port = self.kubelet.ip(self.namespace, pod), self.kubelet.port(self.namespace, pod)
        return (ip, port) if ip and port else None

    # ------------------------------------------------------------------ the controller
    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.reconcile()
            except NotFound:
                continue

    def reconcile(self) -> None:
        """As a ReplicaSet: terminating pods do not count; new ones replace them at once."""
        want = self.fake.get(*DEPLOYMENT, self.app, self.namespace)["spec"].get("replicas", 0)
        pods = [p for p in self.pods() if not p["metadata"].get("deletionTimestamp")]
        missing = want - len(pods)
        for _ in range(max(0, missing)):
            self._create_pod()
        for p in pods[want:] if missing < 0 else []:
            try:
                self.fake.store.delete(self.fake.store.resource(*POD), self.namespace, p["metadata"]["name"])
            except NotFound:
                pass

    def _schedulable(self) -> list[str]:
        ok = []
        for n in self.nodes:
            spec = self.node(n).get("spec", {})
            if spec.get("unschedulable") or any(t.get("effect") in ("NoSchedule", "NoExecute")
                                                for t in spec.get("taints") or []):
                continue
            ok.append(n)
        return ok

    def _create_pod(self) -> str | None:
        """A new pod, bound to a schedulable node and Pending: its kubelet makes it Running and
        Ready. None when no node has room (Pending, unbound, as on a cluster)."""
        nodes = self._schedulable()
        if not nodes:
            return None
        i = next(self._names)
        name = f"{self.app}-{i:03d}"
        status: dict[str, Any] = {"phase": "Pending",  # no IP until its kubelet starts the sandbox
                                  "conditions": [{"type": "PodScheduled", "status": "True",
                                                  "lastTransitionTime": _now()}]}
        self.fake.add(*POD, {"metadata": {"name": name, "namespace": self.namespace, "labels": {"app": self.app}},
                             "spec": self.pod_spec(nodes[i % len(nodes)]), "status": status}, self.namespace)
        return name


def _ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in pod.get("status", {}).get("conditions", []))
