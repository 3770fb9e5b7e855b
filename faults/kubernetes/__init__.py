"""Faults on a Kubernetes target, and how an experiment's fault finds its counterpart here.

Experiments build faults by their local names (`SpotReclamation(target=target, ...)`);
given a Kubernetes target, `counterpart` builds the class below instead, with the
parameters it understands, and keeps the rest in `ignored` for the plan to list.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from inferchaos.errors import NotOnTarget


def _classes() -> dict[str, type]:
    from inferchaos.faults.kubernetes.gpu import KubeGpuOom
    from inferchaos.faults.kubernetes.network import KubeDependencyLatency, KubeModelLoadStall, KubePipelineLag
    from inferchaos.faults.kubernetes.pods import KubeReplicaCrash, KubeReplicaHang
    from inferchaos.faults.kubernetes.spot import KubeSpotReclamation

    return {c.name: c for c in (KubeSpotReclamation, KubeGpuOom, KubeModelLoadStall, KubePipelineLag,
                                KubeDependencyLatency, KubeReplicaCrash, KubeReplicaHang)}


def counterpart(name: str, kwargs: dict[str, Any]) -> Any:
    classes = _classes()
    if name not in classes:
        raise NotOnTarget(f"{name} has no Kubernetes implementation (it needs the local cluster)")
    cls = classes[name]
    accepted = {f.name for f in dataclasses.fields(cls) if f.init}
    fault = cls(**{k: v for k, v in kwargs.items() if k in accepted})
    fault.ignored = {k: v for k, v in kwargs.items() if k not in accepted and v is not None}
    return fault
