"""What every executor on a Kubernetes target shares: choosing pods within the blast
radius, the connection its undo steps carry, and the casualties the failover probe follows.

An experiment runs here unchanged when it names its local-only parameters as such
(`spot_reclamation.on(target, notice_s=2, only_on={"local": {"provisioning_delay_s": 3}})`);
one given plainly that means nothing here is refused by the spec, never dropped.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from inferchaos.faults.base import Fault, Landing
from inferchaos.faults.radius import BlastRadius
from kubernetes.client.exceptions import ApiException

from inferchaos.ground.errors import FaultError, UsageError
from inferchaos.faults.undo import use
from inferchaos.targets.kubernetes.pods import PodView
from inferchaos.targets.kubernetes.target import KubeTarget


RUNNER_POD_ENV = "INFERCHAOS_RUNNER_POD"


def runner_pod() -> str:
    """This runner's pod when it runs in one (deploy/'s CronJob sets it from the downward
    API), else "": a later run recovers a dead pod's changes at once, a person's at expiry."""
    return os.environ.get(RUNNER_POD_ENV, "")


@dataclass
class KubeFault(Fault):
    victims: list[PodView] = field(default_factory=list, init=False)
    _died: dict[str, float] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.target, KubeTarget):
            raise UsageError(f"{self.name} needs a Kubernetes target")
        self.radius = BlastRadius.parse(self.args.get("replicas", "1"))
        super().__post_init__()

    @property
    def kube(self) -> KubeTarget:
        assert self.target is not None
        return self.target

    @property
    def conn(self) -> dict[str, Any]:
        """The cluster as an undo step names it: its UID and context, never a kubeconfig
        (whoever replays the step reaches the cluster through their own; this process
        through its target's, registered with `undo.use`)."""
        c = self.kube.connection
        use(c)
        return {"context": c.context, "cluster": c.cluster or ""}

    @property
    def namespace(self) -> str:
        return self.kube.namespace

    def target_ref(self) -> dict[str, Any]:
        """What the ledger says of the target; `ledger` and `connection` are how the entry
        is mirrored into the cluster (faults.cluster_ledger) by whoever writes it next."""
        return {"kind": "kubernetes", "context": self.kube.connection.context, "namespace": self.namespace,
                "selector": self.kube.selector, "connection": self.conn, "ledger": self.kube.run_id,
                "runner_pod": runner_pod(), "expire_after_s": self.kube.settings.expire_after_s}

    def choose(self) -> list[PodView]:
        """The first Ready pods by name, as many as the blast radius allows of the pods the
        selector picks -- and never the last Ready ones: a radius counted over pods that are
        not serving must not take what still serves."""
        pods = sorted(self.kube.replicas(), key=lambda p: p.name)
        n = self.radius.resolve(len(pods), "pods")
        ready = [p for p in pods if p.phase == "ready"]
        if n >= len(ready) and ready:
            raise UsageError(f"{self.name}: taking {n} of the {len(ready)} Ready pods ({len(pods)} selected) "
                             "would leave none serving: refused (wait for the steady state, or narrow --replicas)")
        return ready[:n]

    def victims_or_fail(self) -> list[PodView]:
        victims = self.choose()
        if not victims:
            raise UsageError(f"{self.name}: no Ready pod matches {self.kube.selector} in {self.namespace}")
        return victims

    @property
    def run_id(self) -> str:
        """The ledger entry: what marks on the cluster name as their owner."""
        assert self._entry is not None, "run_id before inject()"
        return self._entry.id

    def expires_at(self) -> float:
        return time.time() + self.kube.settings.expire_after_s

    def landed(self) -> Landing:
        """The victims out of service as the API sees them (deleted, terminating or not
        Ready). What the data plane saw is the failover probe's; reading the process
        state inside the container is the Kubernetes verification issue's."""
        if not self.victims:
            return Landing(False, "no pod was chosen")
        ready = {p.name for p in self.kube.replicas() if p.phase == "ready"}
        serving = [v.name for v in self.victims if v.name in ready]
        if serving:
            return Landing(False, f"still Ready: {', '.join(serving)}")
        return Landing(True, "out of service (API view): " + ", ".join(v.name for v in self.victims))

    def died(self, pod: PodView) -> None:
        self._died.setdefault(pod.name, time.monotonic())

    def casualties(self) -> list[tuple[PodView, float]]:
        """(pod, monotonic time it stopped serving), for the failover probe."""
        return [(v, self._died[v.name]) for v in self.victims if v.name in self._died]

    def server_pattern(self, pod: PodView) -> str:
        """--server-process, else the container's command in the pod spec."""
        if self.kube.settings.server_process:
            return self.kube.settings.server_process
        container = self.kube.container_of(pod)
        try:
            spec = self.kube.pod(pod.name).spec
        except ApiException as exc:
            raise FaultError(f"{self.name}: cannot read pod {pod.name}: {exc.status} {exc.reason}") from None
        command = next((c.command for c in spec.containers if c.name == container), None)
        if not command:
            raise UsageError(f"{self.name}: container {container} of pod {pod.name} names no command (its image's "
                             "entrypoint runs): give --server-process TEXT, what the server's command line holds")
        return " ".join(command)
