"""Pod faults on Kubernetes, on the server's process rather than the pod object.

- replica_crash: the server process is SIGKILLed inside its container; the container exits
  and the kubelet restarts it (restartCount + 1, lastState.terminated) -- what a crash is.
  Deleting the pod object (grace 0) would only remove it from the API while its containers
  may still run and hold the GPU.
- replica_hang: the server process is SIGSTOPped (found by its command line, never PID 1;
  see `targets.kubernetes.processes`) and read back in state T; a watchdog in the container
  resumes it at the expiry even if the runner is gone; revert sends SIGCONT.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from inferchaos.faults.base import Landing
from inferchaos.faults.kubernetes.base import KubeFault
from inferchaos.faults.registry import executes
from inferchaos.faults.undo import step
from inferchaos.ground.errors import FaultError
from inferchaos.targets.kubernetes import dataplane, processes
from inferchaos.targets.kubernetes.pods import PodView
from inferchaos.targets.kubernetes.processes import Proc


@dataclass
class _ProcessFault(KubeFault):
    #: pod -> the server process signalled in it.
    procs: dict[str, Proc] = field(default_factory=dict, init=False)

    def _find(self, pod: PodView) -> Proc:
        return processes.server(self.kube.connection, self.namespace, pod.name, self.kube.container_of(pod),
                                self.server_pattern(pod))

    def figures(self) -> dict[str, Any]:
        return {"processes": {pod: {"pid": p.pid, "cmdline": p.cmdline[:120]} for pod, p in self.procs.items()}}


@executes("replica_crash", "kubernetes")
@dataclass
class KubeReplicaCrash(_ProcessFault):
    restarts_before: dict[str, int] = field(default_factory=dict, init=False)
    #: the kubelet notices the exit and restarts the container: a pod status update away.
    land_within_s = 15.0  # type: ignore[misc]

    def _plan(self) -> list[str]:
        return [f"SIGKILL the server process in pod {p.name} ({self.kube.container_of(p)}, node {p.node}), found by "
                f"its command line ({self.kube.settings.server_process or 'the container command'}); the kubelet "
                "restarts the container" for p in self.choose()]

    def _inject(self) -> None:
        self.victims = self.victims or self.victims_or_fail()  # chosen already by a fault that wraps this one
        conn = self.kube.connection
        found = {p.name: self._find(p) for p in self.victims}  # every victim checked before any is touched
        for p in self.victims:
            self.restarts_before[p.name] = p.restarts
            processes.kill(conn, self.namespace, p.name, self.kube.container_of(p), found[p.name])
            self.procs[p.name] = found[p.name]
            self.died(p)
            self.note("killed", p.name)

    def landed(self) -> Landing:
        """Each victim's container restarted, as the kubelet reports it (restartCount grew),
        and the process killed is gone from the container (its pid and start time no longer
        in /proc: not a zombie, not a survivor). Whether the Service's slices took the pod
        out is said beside it, not required: a data plane that never noticed is the failover
        probe's finding, which an inconclusive run would hide."""
        if not self.victims:
            return Landing(False, "no pod was chosen")
        now = {p.name: p for p in self.kube.replica_records()}
        waiting = [v.name for v in self.victims
                   if v.name not in now or now[v.name].restarts <= self.restarts_before.get(v.name, 0)]
        if waiting:
            return Landing(False, "restartCount unchanged: " + ", ".join(waiting))
        seen = []
        for v in self.victims:
            proc = self.procs[v.name]
            try:
                left = processes.state(self.kube.connection, self.namespace, v.name, self.kube.container_of(v), proc)
            except FaultError as exc:  # the restarted container not running yet: ask again
                return Landing(False, f"pod {v.name} restarted; its processes cannot be listed yet ({exc})")
            if left is not None:
                return Landing(False, f"pod {v.name} restarted, but process {proc.pid} is still there (state {left})")
            out = self.kube.went_out_at(v.name)
            killed = self._died.get(v.name)
            told = (f"out of the Service's slices {out - killed:.2f} s after the kill"
                    if out is not None and killed is not None and out >= killed - 0.5
                    else "not taken out of the Service's slices")
            seen.append(f"{v.name} (restartCount {self.restarts_before[v.name]} -> {now[v.name].restarts}; "
                        f"process {proc.pid} gone; {told})")
        return Landing(True, "container restarted: " + ", ".join(seen))

    def casualties(self) -> list[tuple[PodView, float]]:
        """Dead when the kubelet says the container finished (the data plane's death), on the
        monotonic clock; until it says so, when the SIGKILL was sent."""
        now = {p.name: p for p in self.kube.replica_records()}
        offset = time.monotonic() - time.time()
        out = []
        for v, sent in super().casualties():
            finished = now[v.name].terminated_at if v.name in now else None
            out.append((v, finished + offset if finished is not None and finished + offset >= sent - 1 else sent))
        return out

    def figures(self) -> dict[str, Any]:
        now = {p.name: p for p in self.kube.replica_records()}
        return {**super().figures(),
                "restarts": {n: {"before": b, "after": now[n].restarts if n in now else None}
                             for n, b in self.restarts_before.items()}}


@executes("replica_hang", "kubernetes")
@dataclass
class KubeReplicaHang(_ProcessFault):

    def _plan(self) -> list[str]:
        return [f"SIGSTOP the server process in pod {p.name} ({self.kube.container_of(p)}), found by its command "
                f"line ({self.kube.settings.server_process or 'the container command'}), read back as stopped; "
                f"SIGCONT on revert, or by itself after {self.kube.settings.expire_after_s} s"
                for p in self.choose()]

    def _inject(self) -> None:
        self.victims = self.victims_or_fail()
        conn = self.kube.connection
        found = {p.name: self._find(p) for p in self.victims}
        self.journal([step("kube_resume", conn=self.conn, namespace=self.namespace, pod=p.name,
                           container=self.kube.container_of(p), pid=found[p.name].pid,
                           started=found[p.name].started) for p in self.victims])
        for p in self.victims:
            processes.stop(conn, self.namespace, p.name, self.kube.container_of(p), found[p.name],
                           self.kube.settings.expire_after_s)
            self.procs[p.name] = found[p.name]
            self.died(p)
            self.note("sigstop", p.name)

    #: the mechanism (state T) and then the effect (each victim silent at its address while a
    #: peer answers, a 2-s request each) are read on every check.
    land_within_s = 12.0  # type: ignore[misc]

    def landed(self) -> Landing:
        """The mechanism: each server process reads back in state T from /proc inside its
        container. The effect: each victim's own address says nothing while a peer answers
        (a stopped master whose workers still serve passes the first and fails the second)."""
        if not self.victims:
            return Landing(False, "no pod was chosen")
        conn, seen = self.kube.connection, []
        for v in self.victims:
            proc = self.procs.get(v.name)
            now = proc and processes.state(conn, self.namespace, v.name, self.kube.container_of(v), proc)
            if now != "T":
                return Landing(False, f"pod {v.name}: process {proc.pid if proc else '?'} is "
                                      f"{'gone' if now is None else 'in state ' + now}, not stopped (T)")
            seen.append(f"{v.name} pid {proc.pid}")
        silence = self.silence()
        if not silence.ok:
            return Landing(False, f"stopped (state T: {', '.join(seen)}), but {silence.evidence}")
        return Landing(True, f"stopped (state T in /proc: {', '.join(seen)}); {silence.evidence}")

    def silence(self) -> Landing:
        """Each victim asked at the address its EndpointSlice names, and a Ready peer the same
        way: the victims silent and a peer answering is the hang's effect; a peer silent too
        means the runner cannot reach pod IPs, and the effect is unread (targets.kubernetes.dataplane)."""
        replies = []
        for v in self.victims:
            address = self.kube.address_of(v.name)
            if address is None:
                return Landing(False, f"its effect cannot be read: no EndpointSlice address for pod {v.name} "
                                      f"(the LB view is {self.kube.lb_view()})")
            replies.append(dataplane.ask(v.name, *address))
        loud = [r for r in replies if r.answered]
        if loud:
            return Landing(False, "the pod still answers: " + "; ".join(map(str, loud))
                           + " (another process serves it: workers of the stopped one?)")
        names = {v.name for v in self.victims}
        peers = [p.name for p in self.kube.replicas() if p.phase == "ready" and p.name not in names]
        asked = []
        for peer in peers[:2]:
            address = self.kube.address_of(peer)
            if address is not None:
                reply = dataplane.ask(peer, *address)
                if reply.answered:
                    return Landing(True, "silent: " + "; ".join(map(str, replies)) + f"; while {reply}")
                asked.append(str(reply))
        why = f"no peer answered either ({'; '.join(asked)})" if asked else "no Ready peer with an address to compare"
        return Landing(False, f"its effect cannot be read: {'; '.join(map(str, replies))}, and {why}: "
                              "the runner may not reach pod IPs")
