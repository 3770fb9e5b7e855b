"""Fault windows on the dashboards: the runner's /metrics, and Grafana's annotation API.

Grafana cannot run here, so a small aiohttp server answers its annotation API (the
lowest boundary: real HTTP, our client unchanged) and keeps what it was sent.
"""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from aiohttp import web

from inferchaos.annotations import Annotations
from inferchaos.ground.ports import free_port


class FakeGrafana:
    def __init__(self, fail: bool = False) -> None:
        self.port, self.fail = free_port(), fail
        self.requests: list[tuple[str, str, dict, str | None]] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path, await request.json(),
                              request.headers.get("Authorization")))
        if self.fail:
            return web.json_response({"message": "Unauthorized"}, status=401)
        if request.method == "POST":
            return web.json_response({"id": 41, "message": "Annotation added"})
        return web.json_response({"message": "Annotation patched"})

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/api/annotations{tail:.*}", self._handle)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def __enter__(self) -> FakeGrafana:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def metric(url: str, fault: str, experiment: str) -> float | None:
    text = httpx.get(url, timeout=5).text
    line = f'inferchaos_fault_active{{experiment="{experiment}",fault="{fault}"}}'
    values = [float(row.split()[-1]) for row in text.splitlines() if row.startswith(line)]
    return values[0] if values else None


def test_fault_active_is_1_during_the_window_and_0_after():
    ann = Annotations(port=0).start()
    try:
        assert ann.metrics_url and metric(ann.metrics_url, "replica_crash", "crash") is None
        ann.fault_started("replica_crash", "crash", 1_790_000_000.0)
        assert metric(ann.metrics_url, "replica_crash", "crash") == 1.0
        ann.fault_ended("replica_crash", "crash", 1_790_000_006.0)
        assert metric(ann.metrics_url, "replica_crash", "crash") == 0.0
    finally:
        ann.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(ann.metrics_url, timeout=2)  # the exporter is gone with the run


def test_grafana_gets_one_region_annotation_per_fault_window():
    with FakeGrafana() as grafana:
        ann = Annotations(grafana_url=grafana.url, grafana_token="s3cret", say=lambda _: None)
        ann.fault_started("gpu_oom", "gpu_oom[sudden]", 1_790_000_000.5)
        ann.fault_ended("gpu_oom", "gpu_oom[sudden]", 1_790_000_006.25, verdict="pass")
    (post, patch) = grafana.requests
    assert post[:2] == ("POST", "/api/annotations") and post[3] == "Bearer s3cret"
    assert post[2]["time"] == 1_790_000_000_500
    assert {"inferchaos", "fault:gpu_oom", "experiment:gpu_oom[sudden]"} <= set(post[2]["tags"])
    assert patch[:2] == ("PATCH", "/api/annotations/41")
    assert patch[2]["timeEnd"] == 1_790_000_006_250 and "pass" in patch[2]["text"]


def test_a_broken_grafana_is_said_once_and_the_run_goes_on():
    said: list[str] = []
    with FakeGrafana(fail=True) as grafana:
        ann = Annotations(grafana_url=grafana.url, say=said.append)
        ann.fault_started("replica_hang", "hang", 1.0)
        ann.fault_ended("replica_hang", "hang", 2.0)
        ann.fault_started("replica_hang", "hang-2", 3.0)
    assert len(grafana.requests) == 1, "no more requests after the first failure"
    assert len(said) == 1 and "401" in said[0] and "Grafana annotations off" in said[0]
