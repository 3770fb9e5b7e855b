"""What runs where: the inference workloads of a target, their GPUs and their owners.

`inventory_of(target)` works on a `LocalCluster` or a `KubeTarget` (what a run tested);
`local_inventory` and `kube_inventory` are what the `inferchaos inventory` verb calls.
A workload that asks for GPUs and has no owner label is flagged as shadow AI.
"""

from __future__ import annotations

from typing import Any

from inferchaos.targets.inventory.workload import (DEFAULT_OWNER_KEYS, DeviceMemory, Workload, shadow_line, shadow_workloads,
                                        table, to_json)


def inventory_of(target: Any, owner_keys: tuple[str, ...] = DEFAULT_OWNER_KEYS) -> list[Workload]:
    """The workloads `target` puts under test: the local cluster itself, or the Deployments,
    StatefulSets and InferenceServices whose pods the Kubernetes target's selector picks.
    Read-only. Raises TargetError (a list refused) or UsageError (API server unreachable)."""
    if target.kind == "local":
        from inferchaos.targets.inventory.local import local_inventory

        return local_inventory(target, owner_keys)
    if target.kind == "kubernetes":
        from inferchaos.targets.inventory.kube import kube_inventory

        return kube_inventory(target.api, [target.namespace], target.connection.context, owner_keys,
                              selector=target.selector)
    raise TypeError(f"no inventory for a target of kind {target.kind!r}")


__all__ = ["DEFAULT_OWNER_KEYS", "DeviceMemory", "Workload", "inventory_of", "shadow_line", "shadow_workloads",
           "table", "to_json"]
