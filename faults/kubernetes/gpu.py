"""GPU OOM on Kubernetes: the memory hog runs inside the target pod's container by exec
and holds device memory until revert; the pod's restarts and OOMKilled reasons are read
back from the API. The image must carry inferchaos (`python -m faults.gpu_hog`); for a
vLLM or Triton image, run the hog image as a sidecar, or use the reference server."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from faults.base import Landing
from faults.kubernetes.base import KubeFault
from faults.local import non_negative
from inferchaos.errors import FaultError
from targets.kubernetes import ops
from targets.kubernetes.connection import Connection

HOG_LOG = "/tmp/inferchaos-gpu-hog.log"


@dataclass
class KubeGpuOom(KubeFault):
    name = "gpu_oom"
    leave: str = "0"
    ramp_s: float = 0.0
    device: int = 0
    restarts_before: dict[str, int] = field(default_factory=dict, init=False)

    def validate(self) -> None:
        non_negative(self.name, self.ramp_s, "ramp_s")

    def params(self) -> dict[str, Any]:
        return {"replicas": str(self.radius), "leave": self.leave, "ramp_s": self.ramp_s, "device": self.device}

    def hog_argv(self) -> list[str]:
        argv = ["python", "-m", "faults.gpu_hog", "--cuda", "--device", str(self.device), "--leave", self.leave]
        return argv + (["--ramp-s", f"{self.ramp_s:g}"] if self.ramp_s else [])

    def _plan(self) -> list[str]:
        return [f"exec in pod {p.name} ({self.kube.container_of(p)}): {' '.join(self.hog_argv())} in the background, "
                f"holding GPU {self.device} memory until revert (pkill -f faults.gpu_hog)" for p in self.choose()]

    def _inject(self) -> None:
        self.victims = self.victims_or_fail()
        self.journal([self.undo_exec(p, ["pkill", "-f", "faults.gpu_hog"], f"pod {p.name}: end the GPU hog")
                      for p in self.victims])
        conn = Connection(**self.conn)
        background = ["sh", "-c", f"nohup {' '.join(self.hog_argv())} >{HOG_LOG} 2>&1 & echo $!"]
        for p in self.victims:
            self.restarts_before[p.name] = p.restarts
            result = ops.exec_in(conn, self.namespace, p.name, self.kube.container_of(p), background)
            if not result.ok or not result.stdout.strip().isdigit():
                raise FaultError(f"pod {p.name}: the GPU hog did not start: {result.detail} "
                                 f"{(result.stderr or result.stdout).strip()[:200]}")
            self.note("hog started", p.name)
            self.died(p)

    def landed(self) -> Landing:
        """The hog started in every victim (its pid printed). That it took device memory is
        not read back on Kubernetes yet (the runner pod sees no NVML of the node's GPU)."""
        started = {e.subject for e in self.events if e.what == "hog started"}
        missing = [v.name for v in self.victims if v.name not in started]
        if not self.victims or missing:
            return Landing(False, f"no hog started in {', '.join(missing) or 'any pod'}")
        return Landing(True, "hog started in " + ", ".join(sorted(started)) + " (device memory not read back)")

    def figures(self) -> dict[str, Any]:
        """Restarts and OOMKilled reasons of the pods the hog was put in, as the API says."""
        now = {p.name: p for p in self.kube.replica_records()}
        return {name: {"restarts": (now[name].restarts if name in now else None), "restarts_before": before,
                       "oom_killed": bool(now[name].oom_killed) if name in now else None}
                for name, before in self.restarts_before.items()}
