"""Samples the load balancer's view of its servers through the whole run.

HAProxy's state changes are what failover *is*, so they are sampled from its admin
socket every `interval_s` on the same monotonic clock as the request log, not read
once at the end.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from inferchaos.targets.local.haproxy import AdminSocket


@dataclass(frozen=True)
class LbSample:
    t: float
    server: str
    port: int
    state: str  # running | starting | stopped | stopping | maint

    @property
    def up(self) -> bool:
        return self.state in ("running", "starting")


class LbSampler:
    def __init__(self, admin: AdminSocket, interval_s: float = 0.1) -> None:
        self.admin, self.interval_s = admin, interval_s
        self.samples: list[LbSample] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lb-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                servers = self.admin.servers()
            except OSError:
                self.errors += 1
            else:
                self.samples.extend(LbSample(t, s.name, s.port, s.state) for s in servers if s.state != "maint")
            self._stop.wait(self.interval_s)

    def start(self) -> LbSampler:
        self._thread.start()
        return self

    def stop(self) -> list[LbSample]:
        self._stop.set()
        self._thread.join(5)
        return self.samples

    def __enter__(self) -> LbSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
