"""The workloads that run the selected pods, and their autoscalers, kept by watches.

The steady state is the replicas a Deployment or StatefulSet asks for (an HPA or a KEDA
ScaledObject writes its count there); the engine asks for it on every tick, and the
autoscaling probe samples the HPA faster still. Both are read from watched caches
(targets.kubernetes.informer): one long request per resource instead of a LIST per tick.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from inferchaos.ground.errors import TargetError, UsageError
from inferchaos.targets.kubernetes.informer import Informer
from inferchaos.targets.kubernetes.settings import equality_terms

#: a failed first read of the HPAs or ScaledObjects is tried again after this long (the
#: probe samples faster; a cluster without KEDA answers 404 every time).
RETRY_S = 2.0


@dataclass
class Workloads:
    api: client.ApiClient
    namespace: str
    selector: str
    _deployments: Informer | None = None
    _statefulsets: Informer | None = None
    _hpas: Informer | None = None
    _scaled: Informer | None = None
    _failed_at: dict[str, float] = field(default_factory=dict)
    _started: list[Informer] = field(default_factory=list)

    def start(self) -> Workloads:
        """Lists the Deployments and StatefulSets (its errors are one line), then watches them."""
        apps = client.AppsV1Api(self.api)
        try:
            self._deployments = self._run(apps.list_namespaced_deployment, "deployment-watch")
            self._statefulsets = self._run(apps.list_namespaced_stateful_set, "statefulset-watch")
        except ApiException as exc:
            self.stop()
            raise TargetError(f"cannot list the Deployments and StatefulSets of {self.namespace} to read the "
                              f"replicas they ask for: {exc.status} {exc.reason}") from None
        except (Urllib3Error, OSError) as exc:
            self.stop()
            raise TargetError(f"cannot list the workloads of {self.namespace}: {exc}") from None
        return self

    def _run(self, list_fn: Callable[..., Any], name: str, args: tuple[Any, ...] | None = None) -> Informer:
        informer = Informer(list_fn, args or (self.namespace,), name=name).start()
        self._started.append(informer)
        return informer

    def _lazily(self, list_fn: Callable[..., Any], name: str, args: tuple[Any, ...] | None = None) -> Informer | None:
        """Started on first use; a failed start is not tried again for RETRY_S."""
        if time.monotonic() - self._failed_at.get(name, float("-inf")) < RETRY_S:
            return None
        try:
            return self._run(list_fn, name, args)
        except (ApiException, Urllib3Error, OSError):
            self._failed_at[name] = time.monotonic()
            return None

    def stop(self) -> None:
        for informer in self._started:
            informer.stop()
        self._started.clear()

    @property
    def error(self) -> str | None:
        """Why the workloads' view may be stale (their watch failing), else None."""
        return next((i.error for i in (self._deployments, self._statefulsets) if i and i.error), None)

    def runs_ours(self, workload: client.V1Deployment | client.V1StatefulSet) -> bool:
        """Its pod template carries every key=value the selector asks for: its pods are ours."""
        meta = workload.spec.template.metadata
        labels = (meta.labels if meta else None) or {}
        want = equality_terms(self.selector)
        return bool(want) and all(labels.get(k) == v for k, v in want.items())

    def ours(self) -> list[client.V1Deployment | client.V1StatefulSet]:
        found = [*(self._deployments.snapshot() if self._deployments else []),
                 *(self._statefulsets.snapshot() if self._statefulsets else [])]
        return [w for w in found if self.runs_ours(w)]

    def desired(self) -> int:
        """What the workloads running the selected pods ask for; refused where none does."""
        asked = [w.spec.replicas if w.spec.replicas is not None else 1 for w in self.ours()]
        if not asked:
            raise UsageError(f"--selector {self.selector} picks pods that no Deployment or StatefulSet in "
                             f"{self.namespace} runs: the steady state is the replicas a workload asks for; "
                             "select a workload's pods")
        return sum(asked)

    def autoscaling(self) -> dict:
        """The HPA whose target is one of our Deployments (the one KEDA creates, or a plain
        one), and that ScaledObject's Ready/Active conditions where KEDA is installed."""
        if self._hpas is None:
            self._hpas = self._lazily(client.AutoscalingV2Api(self.api).list_namespaced_horizontal_pod_autoscaler,
                                      "hpa-watch")
            if self._hpas is None:
                return {"enabled": False, "error": "the HorizontalPodAutoscalers could not be read"}
        names = {w.metadata.name for w in self.ours() if isinstance(w, client.V1Deployment)}
        hpa = next((h for h in self._hpas.snapshot() if h.spec.scale_target_ref.kind == "Deployment"
                    and h.spec.scale_target_ref.name in names), None)
        if hpa is None:
            return {"enabled": False}
        status = hpa.status
        return {"enabled": True, "hpa": hpa.metadata.name, "workload": hpa.spec.scale_target_ref.name,
                "desired": status.desired_replicas if status else None,
                "current": status.current_replicas if status else None,
                "min": hpa.spec.min_replicas, "max": hpa.spec.max_replicas,
                "scaled_object": self._scaled_object(hpa.spec.scale_target_ref.name)}

    def _scaled_object(self, workload: str) -> dict | None:
        """Watched from the first HPA found; None where KEDA is not installed (404) or not readable."""
        if self._scaled is None:
            self._scaled = self._lazily(client.CustomObjectsApi(self.api).list_namespaced_custom_object,
                                        "scaledobject-watch", ("keda.sh", "v1alpha1", self.namespace, "scaledobjects"))
            if self._scaled is None:
                return None
        for so in self._scaled.snapshot():
            if ((so.get("spec") or {}).get("scaleTargetRef") or {}).get("name") == workload:
                conditions = {c.get("type"): c.get("status") for c in (so.get("status") or {}).get("conditions", [])}
                return {"name": so["metadata"]["name"], "ready": conditions.get("Ready"),
                        "active": conditions.get("Active")}
        return None
