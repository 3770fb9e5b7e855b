"""GPU OOM on Kubernetes: the memory hog runs inside the target pod's container by exec
and holds device memory until revert (or its expiry: it runs under `timeout`). It counts
as landed once its status file, read back from the container, says it holds memory. The
pod's restarts are read from the API; a CUDA OOM is the server's own error (its answers,
its exit), never `OOMKilled`, which is the cgroup's RAM kill -- reported as what it is.
vLLM preallocates device memory (--gpu-memory-utilization): a hog squeezes what is left.
The image must carry inferchaos (`python -m inferchaos.faults.gpu_hog`); for a vLLM or Triton image,
run the hog image as a sidecar, or use the reference server."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any

from inferchaos.faults.base import Landing
from inferchaos.faults.kubernetes.base import KubeFault
from inferchaos.faults.registry import executes
from inferchaos.faults.undo import step
from inferchaos.ground.errors import FaultError
from inferchaos.targets.kubernetes import ops

HOG_LOG = "/tmp/inferchaos-gpu-hog.log"
HOG_STATUS = "/tmp/inferchaos-gpu-hog.json"


@executes("gpu_oom", "kubernetes")
@dataclass
class KubeGpuOom(KubeFault):
    restarts_before: dict[str, int] = field(default_factory=dict, init=False)

    def hog_argv(self) -> list[str]:
        argv = ["python", "-m", "inferchaos.faults.gpu_hog", "--cuda", "--device", str(self.args.device), "--leave", self.args.leave,
                "--status", HOG_STATUS]
        return argv + (["--ramp-s", f"{self.args.ramp_s:g}"] if self.args.ramp_s else [])

    def _plan(self) -> list[str]:
        return [f"exec in pod {p.name} ({self.kube.container_of(p)}): {' '.join(self.hog_argv())} in the background, "
                f"holding GPU {self.args.device} memory until revert (or {self.kube.settings.expire_after_s} s)" for p in self.choose()]

    def _inject(self) -> None:
        self.victims = self.victims_or_fail()
        self.journal([step("kube_end_hog", conn=self.conn, namespace=self.namespace, pod=p.name,
                           container=self.kube.container_of(p)) for p in self.victims])
        conn = self.kube.connection
        background = ["sh", "-c", f"rm -f {HOG_STATUS}; nohup timeout {self.kube.settings.expire_after_s} "
                                  f"{shlex.join(self.hog_argv())} >{HOG_LOG} 2>&1 </dev/null & echo $!"]
        for p in self.victims:
            self.restarts_before[p.name] = p.restarts
            result = ops.exec_in(conn, self.namespace, p.name, self.kube.container_of(p), background)
            if not result.ok or not result.stdout.strip().isdigit():
                raise FaultError(f"pod {p.name}: the GPU hog did not start: {result.detail} "
                                 f"{(result.stderr or result.stdout).strip()[:200]}")
            self.note("hog started", p.name)
            self.died(p)

    def landed(self) -> Landing:
        """Every victim's hog reports device memory held (its status file, read back)."""
        if not self.victims:
            return Landing(False, "no pod was chosen")
        conn, held = self.kube.connection, []
        for p in self.victims:
            result = ops.exec_in(conn, self.namespace, p.name, self.kube.container_of(p), ["cat", HOG_STATUS])
            try:
                status = json.loads(result.stdout) if result.ok else {}
            except ValueError:
                status = {}
            if not status.get("held"):
                log = ops.exec_in(conn, self.namespace, p.name, self.kube.container_of(p), ["cat", HOG_LOG])
                return Landing(False, f"pod {p.name}: the hog holds no device memory "
                                      f"({(log.stdout or result.detail).strip()[-200:] or 'no status'})")
            held.append(f"{p.name} {status['held'] / 2**20:.0f} MiB held, {status.get('free', 0) / 2**20:.0f} MiB free")
        return Landing(True, "; ".join(held))

    def figures(self) -> dict[str, Any]:
        """Restarts of the pods the hog was put in, and whether the cgroup (not CUDA) killed one."""
        now = {p.name: p for p in self.kube.replica_records()}
        return {name: {"restarts": (now[name].restarts if name in now else None), "restarts_before": before,
                       "ram_oom_killed": bool(now[name].oom_killed) if name in now else None}
                for name, before in self.restarts_before.items()}
