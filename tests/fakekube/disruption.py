"""PodDisruptionBudgets as the eviction subresource and the disruption controller apply them.

Read from kubernetes/kubernetes (pkg/registry/core/pod/storage/eviction.go,
pkg/controller/disruption/disruption.go, pkg/apis/policy types):
- the PDBs of the pod's namespace whose selector matches its labels; more than one is a 500
  ("This pod has more than one PodDisruptionBudget, which the eviction subresource does not
  support."); none lets the eviction through;
- a terminal pod (Succeeded/Failed) is evicted whatever the budget; a pod not Ready is evicted
  when the budget is healthy (currentHealthy >= desiredHealthy: the default
  unhealthyPodEvictionPolicy IfHealthyBudget), else refused like a healthy one;
- the disruption controller's status: expectedPods (here the pods the selector matches:
  the controllers' scale, when every pod has one), currentHealthy (those Ready and not being
  deleted), desiredHealthy (minAvailable, an int or a percentage of expectedPods rounded up;
  or expectedPods - maxUnavailable), disruptionsAllowed = currentHealthy - desiredHealthy less
  the pods already evicted and not yet gone (status.disruptedPods);
- no disruption allowed: 429 TooManyRequests "Cannot evict pod as it would violate the pod's
  disruption budget." with the cause (reason DisruptionBudget) "The disruption budget NAME needs
  N healthy pods and has M currently"; allowed: the pod goes into status.disruptedPods, and
  disruptionsAllowed drops by one, before the pod is deleted.

The fake computes the status at the moment of each eviction (a controller that is never behind).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tests.fakekube.selectors import label_selector_predicate
from tests.fakekube.store import NotFound, Store, rfc3339_now

PDB = ("policy", "v1", "poddisruptionbudgets")
POD = ("", "v1", "pods")
REFUSED = "Cannot evict pod as it would violate the pod's disruption budget."


@dataclass(frozen=True)
class Refusal:
    code: int
    reason: str
    message: str
    details: dict[str, Any] | None = None


def _ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _desired(spec: dict[str, Any], expected: int) -> int:
    if "minAvailable" in spec:
        value = spec["minAvailable"]
        if isinstance(value, str) and value.endswith("%"):
            return math.ceil(expected * int(value[:-1]) / 100)
        return int(value)
    value = spec.get("maxUnavailable", 0)
    if isinstance(value, str) and value.endswith("%"):
        value = math.ceil(expected * int(value[:-1]) / 100)
    return max(0, expected - int(value))


def evict_or_refuse(store: Store, namespace: str, name: str) -> Refusal | None:
    """None: the eviction may go on (the budget, if any, has counted it). Else the refusal."""
    pods_r, pdb_r = store.resource(*POD), store.resource(*PDB, "PodDisruptionBudget")
    pod = store.get(pods_r, namespace, name)
    labels = (pod.get("metadata") or {}).get("labels") or {}
    budgets, _ = store.list(pdb_r, namespace,
                            lambda b: label_selector_predicate((b.get("spec") or {}).get("selector"))(labels))
    if not budgets:
        return None
    if len(budgets) > 1:
        return Refusal(500, "InternalError",
                       "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.")
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return None
    (budget,) = budgets
    spec, bname = budget.get("spec") or {}, budget["metadata"]["name"]
    matches = label_selector_predicate(spec.get("selector"))
    pods, _ = store.list(pods_r, namespace, lambda p: matches((p.get("metadata") or {}).get("labels") or {}))
    healthy = [p for p in pods if _ready(p) and not p["metadata"].get("deletionTimestamp")]
    desired = _desired(spec, len(pods))
    disrupted = dict((budget.get("status") or {}).get("disruptedPods") or {})
    disrupted = {p: t for p, t in disrupted.items() if any(q["metadata"]["name"] == p and
                                                             not q["metadata"].get("deletionTimestamp") for q in pods)}
    allowed = max(0, len(healthy) - desired - len(disrupted))
    if not _ready(pod) and len(healthy) >= desired:
        return None  # IfHealthyBudget: an unhealthy pod of a healthy budget goes
    if allowed <= 0:
        return Refusal(429, "TooManyRequests", REFUSED, {"causes": [{
            "reason": "DisruptionBudget",
            "message": f"The disruption budget {bname} needs {desired} healthy pods and has {len(healthy)} currently"}]})

    def count(b: dict[str, Any]) -> dict[str, Any]:
        status = b.setdefault("status", {})
        status.update({"currentHealthy": len(healthy), "desiredHealthy": desired, "expectedPods": len(pods),
                       "disruptionsAllowed": allowed - 1, "observedGeneration": b["metadata"].get("generation", 1),
                       "disruptedPods": {**disrupted, name: rfc3339_now()}})
        return b

    try:
        store.update(pdb_r, namespace, bname, count)
    except NotFound:
        pass
    return None
