"""The local cluster as one inference workload: its model, replicas, warm pool, virtual GPUs
and owner.

The local cluster has no labels of its own; an operator gives it an owner in
`<state dir>/labels.json` (`{"owner": "ml-platform", "team": "search"}`). Its virtual
GPUs stand for real ones (the cluster models a GPU fleet), so a cluster without an owner
label is shadow AI like any other GPU workload, and the note says how to label it.
"""

from __future__ import annotations

import json
from pathlib import Path

from inferchaos.ground.errors import UsageError
from inferchaos.targets.inventory.workload import DEFAULT_OWNER_KEYS, DeviceMemory, Workload
from inferchaos.targets.local.cluster import LocalCluster
from inferchaos.targets.local.control import read_desired
from inferchaos.targets.local.state import ClusterState, ReplicaRecord
from inferchaos.targets.local.vgpu import VirtualDevice

LABELS_FILE = "labels.json"


def read_labels(state_dir: Path | str) -> dict[str, str]:
    """`<state dir>/labels.json`, a JSON object of string labels; none when the file is absent."""
    path = Path(state_dir) / LABELS_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise UsageError(f"{path}: expected a JSON object of string labels, e.g. "
                         '{"owner": "ml-platform", "team": "search"}')
    return raw


def devices_of(state: ClusterState) -> tuple[DeviceMemory, ...]:
    """Each virtual GPU a replica uses: capacity, bytes used, and who holds them. A stopped
    cluster's devices are gone with it: none then."""
    if not state.vgpu_dir:
        return ()
    by_pid = {r.pid: r.name + (" (warm)" if r.slot is None else "") for r in state.replicas}
    out = []
    for index in sorted({r.device for r in state.replicas}):
        dev = VirtualDevice(state.vgpu_dir, index)
        if not dev.exists():
            continue
        try:
            usage = dev.usage()
        except (FileNotFoundError, ValueError):
            continue  # removed between the check and the read (the cluster stopping)
        holders: dict[str, int] = {}
        for key, nbytes in usage.allocations.items():
            pid = int(key.split("/", 1)[0])
            who = by_pid.get(pid, f"pid {pid}")
            holders[who] = holders.get(who, 0) + nbytes
        out.append(DeviceMemory(index, usage.capacity, usage.used, holders))
    return tuple(out)


def local_inventory(cluster: LocalCluster, owner_keys: tuple[str, ...] = DEFAULT_OWNER_KEYS) -> list[Workload]:
    state = cluster.state
    spec = cluster.spec
    desired = {**state.spec, **read_desired(cluster.state_dir)}
    labels = read_labels(cluster.state_dir)
    owner = {k: labels[k] for k in owner_keys if labels.get(k)}
    model, source = ((f"custom: {spec.replica_cmd}", "replica_cmd") if spec.replica_cmd
                     else (spec.model, "spec.model"))

    def ready(rs: list[ReplicaRecord]) -> int:
        return sum(r.phase == "ready" for r in rs)

    notes = [] if state.phase == "ready" else [f"cluster phase: {state.phase}"]
    if not owner:
        notes.append(f"no owner label ({', '.join(owner_keys)}): its virtual GPUs stand for real ones, so it is "
                     f"flagged; add them to {Path(cluster.state_dir) / LABELS_FILE}, e.g. "
                     '{"owner": "ml-platform", "team": "search"}')
    return [Workload(
        target="local", kind="LocalCluster", name=str(cluster.state_dir), namespace=None, model=model,
        model_source=source, replicas_ready=ready(state.active()), replicas_desired=int(desired["replicas"]),
        gpus_per_replica=1, gpu_types=("virtual",), warm_pool_ready=ready(state.standby()),
        warm_pool_desired=int(desired["warm_pool"]), devices=devices_of(state), owner=owner,
        owner_keys=tuple(owner_keys), notes=tuple(notes),
    )]
