"""One inference workload as the inventory sees it, the shadow-AI rule, and how both print.

Shadow AI is a workload that asks for GPUs and names no owner: the GPU bill nobody
answers for. The rule is the same on every target, so it lives here and nowhere else.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

GIB = 1024**3

#: The label keys that name an owner unless told otherwise (`--owner-label`).
DEFAULT_OWNER_KEYS = ("owner", "team")


@dataclass(frozen=True)
class DeviceMemory:
    """One (virtual) GPU of the local cluster: capacity, use, and who holds it."""

    device: int
    capacity_bytes: int
    used_bytes: int
    #: replica name -> bytes it holds; a process that is no replica (a GPU hog) as "pid <n>".
    holders: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Workload:
    target: str  # local | kubernetes
    kind: str  # LocalCluster | Deployment | StatefulSet | InferenceService
    name: str
    namespace: str | None
    model: str | None
    #: where the model name came from, e.g. "spec.model", "args --model", "label app.kubernetes.io/name".
    model_source: str
    replicas_ready: int
    replicas_desired: int
    #: GPUs one replica asks for: max(requests, limits) of nvidia.com/gpu summed over its
    #: containers (an extended resource's request defaults to its limit); 1 locally.
    gpus_per_replica: int
    #: Kubernetes: nvidia.com/gpu summed over the containers of one pod (None: not set).
    gpu_requests: int | None = None
    gpu_limits: int | None = None
    #: nvidia.com/gpu.product (else the instance type) of the nodes its pods run on.
    gpu_types: tuple[str, ...] = ()
    #: the local cluster's standby replicas: ready, desired (None on Kubernetes).
    warm_pool_ready: int | None = None
    warm_pool_desired: int | None = None
    devices: tuple[DeviceMemory, ...] = ()
    #: owner label key -> value, for the configured keys that are set.
    owner: dict[str, str] = field(default_factory=dict)
    #: the owner keys that were looked for (to say what is missing).
    owner_keys: tuple[str, ...] = DEFAULT_OWNER_KEYS
    #: the kube context it was read from (None locally).
    context: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def gpus(self) -> int:
        """GPUs the workload holds when at its desired size, the warm pool included."""
        return self.gpus_per_replica * (self.replicas_desired + (self.warm_pool_desired or 0))

    @property
    def shadow(self) -> bool:
        """Shadow AI: asks for GPUs, and none of the owner labels is set."""
        return self.gpus_per_replica > 0 and not self.owner

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    def to_dict(self) -> dict:
        return {**asdict(self), "gpus": self.gpus, "shadow": self.shadow}


def shadow_workloads(workloads: list[Workload]) -> list[Workload]:
    return [w for w in workloads if w.shadow]


def to_json(workloads: list[Workload]) -> str:
    return json.dumps([w.to_dict() for w in workloads], indent=2)


def _gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB"


def _gpu_column(w: Workload) -> str:
    if w.target == "local":
        return f"{w.gpus_per_replica} virtual"
    asked = [f"{name} {n}" for name, n in (("req", w.gpu_requests), ("lim", w.gpu_limits)) if n is not None]
    return f"{w.gpus_per_replica} ({', '.join(asked)})" if asked else "0"


def table(workloads: list[Workload]) -> str:
    """A fixed-width table, one row per workload; a local cluster's devices underneath."""
    header = ("NAMESPACE", "KIND", "NAME", "MODEL", "READY", "WARM", "GPU/REPLICA", "GPUS", "GPU TYPE",
              "OWNER", "SHADOW AI")
    rows = [header]
    for w in workloads:
        warm = "-" if w.warm_pool_desired is None else f"{w.warm_pool_ready}/{w.warm_pool_desired}"
        owner = ",".join(f"{k}={v}" for k, v in w.owner.items()) or "-"
        rows.append((w.namespace or "-", w.kind, w.name, w.model or "-", f"{w.replicas_ready}/{w.replicas_desired}",
                     warm, _gpu_column(w), str(w.gpus), ",".join(w.gpu_types) or "-", owner,
                     "YES" if w.shadow else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if n == 0:
            continue
        w = workloads[n - 1]
        for d in w.devices:
            held = ", ".join(f"{k} {_gib(v)}" for k, v in sorted(d.holders.items())) or "nothing held"
            lines.append(f"    device {d.device}: {_gib(d.capacity_bytes)}, {_gib(d.used_bytes)} used ({held})")
        for note in w.notes:
            lines.append(f"    note: {note}")
    return "\n".join(lines)


def shadow_line(workloads: list[Workload]) -> str:
    """One line saying which workloads are shadow AI, or that none is."""
    found = shadow_workloads(workloads)
    if not found:
        return f"shadow AI: none ({len(workloads)} workload{'s' if len(workloads) != 1 else ''} listed)"
    keys = ", ".join(found[0].owner_keys)
    many = len(found) != 1
    return (f"shadow AI: {len(found)} workload{'s ask' if many else ' asks'} for GPUs with no owner label "
            f"({keys}): " + ", ".join(w.ref for w in found))
