"""Fault windows where the dashboards are: a Prometheus metric and Grafana annotations.

An on-call engineer looking at a p99 spike on Grafana must be able to tell "that was
tonight's chaos run" at a glance. The runner therefore exposes
`inferchaos_fault_active{fault,experiment}` (1 while a fault is applied) on its own
/metrics, and, given a Grafana URL, writes a region annotation per fault window through
Grafana's HTTP API. Neither may fail a run: a dashboard that is down is said once, and the
experiment goes on.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Callable

import httpx
from prometheus_client import CollectorRegistry, Gauge, start_http_server

GRAFANA_TOKEN_ENV = "INFERCHAOS_GRAFANA_TOKEN"


@dataclass
class Annotations:
    """Tell the dashboards when each fault was applied. `port` None: no /metrics;
    `grafana_url` None: no Grafana annotations."""

    port: int | None = None
    #: where /metrics listens: loopback on a laptop, 0.0.0.0 in the runner's pod.
    host: str = "127.0.0.1"
    grafana_url: str | None = None
    grafana_token: str | None = field(default_factory=lambda: os.environ.get(GRAFANA_TOKEN_ENV))
    tags: tuple[str, ...] = ("inferchaos", "chaos")
    say: Callable[[str], None] = print
    registry: CollectorRegistry = field(default_factory=CollectorRegistry, init=False)
    bound_port: int | None = field(default=None, init=False)
    _server: object = field(default=None, init=False, repr=False)
    _open: dict[tuple[str, str], int | None] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _grafana_broken: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        self.active = Gauge("inferchaos_fault_active", "1 while an inferchaos fault is applied",
                            ["fault", "experiment"], registry=self.registry)

    def start(self) -> Annotations:
        if self.port is not None:
            server, _thread = start_http_server(self.port, addr=self.host, registry=self.registry)
            self._server = server
            self.bound_port = server.server_port
        return self

    @property
    def metrics_url(self) -> str | None:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return None if self.bound_port is None else f"http://{host}:{self.bound_port}/metrics"

    def stop(self) -> None:
        with self._lock:
            for fault, experiment in list(self._open):
                self.active.labels(fault, experiment).set(0)
        if self._server is not None:
            self._server.shutdown()  # type: ignore[attr-defined]
            self._server.server_close()  # type: ignore[attr-defined]
            self._server = None

    def fault_started(self, fault: str, experiment: str, wall: float) -> None:
        self.active.labels(fault, experiment).set(1)
        annotation = self._grafana("POST", "/api/annotations", {
            "time": int(wall * 1000), "tags": [*self.tags, f"fault:{fault}", f"experiment:{experiment}"],
            "text": f"inferchaos: {fault} injected ({experiment})"})
        with self._lock:
            self._open[(fault, experiment)] = annotation.get("id") if annotation else None

    def fault_ended(self, fault: str, experiment: str, wall: float, verdict: str | None = None) -> None:
        self.active.labels(fault, experiment).set(0)
        with self._lock:
            annotation_id = self._open.pop((fault, experiment), None)
        if annotation_id is not None:
            text = f"inferchaos: {fault} ({experiment})" + (f": {verdict}" if verdict else "")
            self._grafana("PATCH", f"/api/annotations/{annotation_id}", {"timeEnd": int(wall * 1000), "text": text})

    def _grafana(self, method: str, path: str, body: dict) -> dict | None:
        if not self.grafana_url or self._grafana_broken:
            return None
        headers = {"Authorization": f"Bearer {self.grafana_token}"} if self.grafana_token else {}
        try:
            resp = httpx.request(method, self.grafana_url.rstrip("/") + path, json=body, headers=headers, timeout=5)
            resp.raise_for_status()
            return resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            self._grafana_broken = True  # said once; the run goes on without annotations
            self.say(f"Grafana annotations off for this run: {method} {self.grafana_url}{path}: {exc}")
            return None
