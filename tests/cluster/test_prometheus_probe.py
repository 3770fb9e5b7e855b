"""The PromQL probe against a real Prometheus scraping a real local cluster, and its retry
and error handling against a tiny aiohttp server that answers as a struggling Prometheus."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from aiohttp import web

from inferchaos.probes.prometheus import PrometheusClient, PrometheusError, PromSlo, observe_all
from inferchaos.probes.slo import Objective
from inferchaos.probes.verdict import judge, verdict
from inferchaos.targets.local import ClusterSpec, LocalCluster
from tests.support.waiting import wait_for
from inferchaos.ground.ports import free_port
from inferchaos.targets.local.prometheus import LocalPrometheus, render_config
from tests.support.leftovers import assert_nothing_left, processes_mentioning

ROW = [0.05 * i for i in range(16)]
BODY = {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": ROW}]}
P99 = "histogram_quantile(0.99, sum by (le) (rate(vllm:e2e_request_latency_seconds_bucket[10s])))"
WAITING = "sum(vllm:num_requests_waiting)"

no_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="the `prometheus` binary is not installed (Debian/Ubuntu: apt-get install -y prometheus)",
)

VECTOR = {"status": "success", "data": {"resultType": "vector", "result": [
    {"metric": {"__name__": "up", "job": "x"}, "value": [1700000000.5, "1"]}]}}


# ---------------------------------------------------------------------- real Prometheus, real cluster
@pytest.fixture(scope="module")
def prom(tmp_path_factory):
    if shutil.which("prometheus") is None:
        pytest.skip("the `prometheus` binary is not installed (Debian/Ubuntu: apt-get install -y prometheus)")
    state_dir = tmp_path_factory.mktemp("cluster")
    spec = ClusterSpec(replicas=2, provisioning_delay_s=1.0)
    with LocalCluster(spec, state_dir, owner_pid=os.getpid()) as cluster:
        wait_for(lambda: cluster.unsteady() is None, 60, "the cluster to be steady")
        targets = [f"127.0.0.1:{r.port}" for r in cluster.replicas()]
        prom_dir = tmp_path_factory.mktemp("prometheus")
        with LocalPrometheus(targets, prom_dir) as prometheus:
            wait_for(lambda: prometheus.targets_up() == len(targets), 30, "Prometheus to scrape every replica")
            with httpx.Client(base_url=cluster.lb_url, timeout=10) as client, ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(lambda _: client.post("/v2/models/mlp/infer", json=BODY), range(60)))
            assert all(r.status_code == 200 for r in answers)
            with PrometheusClient(prometheus.url) as pc:
                yield pc
        assert not prometheus.running()
        assert not processes_mentioning(str(prom_dir)), "Prometheus left running"
    assert_nothing_left(state_dir)


@pytest.mark.cluster
def test_instant_query_answers_with_data(prom):
    result = wait_for(lambda: (r := prom.query(WAITING)).measured and r, 30, f"data for {WAITING}")
    assert result.result_type == "vector" and len(result.samples) == 1
    assert result.samples[0].value >= 0 and result.reason == ""
    value, why = PromSlo("queue_depth_max", WAITING).observe(prom)
    assert value is not None and value >= 0 and why is None


@pytest.mark.cluster
def test_range_query_of_p99_latency_answers_with_data(prom):
    slo = PromSlo("p99_latency_s", P99, reduce="max")

    def observed() -> float | None:
        now = time.time()
        return slo.observe(prom, now - 60, now)[0]

    value = wait_for(observed, 30, "a p99 latency from the histogram")
    assert 0 < value <= 60  # the histogram's buckets end at 60 s
    now = time.time()
    result = prom.query_range(P99, now - 60, now, 1.0)
    assert result.measured and result.series and all(len(s.points) > 0 for s in result.series)
    times = [t for t, _ in result.series[0].points]
    assert times == sorted(times) and now - 61 <= times[0] and times[-1] <= now + 1


@pytest.mark.cluster
def test_missing_metric_is_no_data_and_fails(prom):
    query = "sum(vllm:no_such_metric)"
    result = prom.query(query)
    assert not result.measured and result.reason == f"not measured: no data for query {query!r}"
    now = time.time()
    assert not prom.query_range(query, now - 30, now).measured
    observed, reasons = observe_all([PromSlo("missing", query)], prom)
    results = judge([Objective("missing", "<=", 1, "count")], observed, reasons)
    assert verdict(results) == "fail"
    assert results[0].detail == f"not measured: no data for query {query!r}"


@pytest.mark.cluster
def test_bad_promql_is_one_clear_error(prom):
    with pytest.raises(PrometheusError) as err:
        prom.query("sum(rate(vllm:e2e_request_latency_seconds_count[1m])")
    text = str(err.value)
    assert "\n" not in text and "bad_data" in text and "parse error" in text
    assert "vllm:e2e_request_latency_seconds_count" in text  # names the query
    observed, reasons = observe_all([PromSlo("bad", "sum(")], prom)
    assert observed == {"bad": None} and "bad_data" in reasons["bad"]


@no_prometheus
def test_local_prometheus_config_and_cleanup(tmp_path):
    config = json.loads(render_config(["127.0.0.1:1"], 1.0))
    assert config["global"]["scrape_interval"] == "1000ms"
    assert config["scrape_configs"][0]["static_configs"] == [{"targets": ["127.0.0.1:1"]}]
    prometheus = LocalPrometheus(["127.0.0.1:1"]).start()
    owned = prometheus.state_dir
    try:
        assert prometheus.running()
        with PrometheusClient(prometheus.url) as pc:
            assert pc.query("1 + 1").samples[0].value == 2.0
    finally:
        prometheus.stop()
    assert not prometheus.running() and not owned.exists()
    prometheus.stop()  # twice is fine


def test_missing_binary_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(Exception, match="Prometheus not found on PATH.*apt-get install -y prometheus"):
        LocalPrometheus(["127.0.0.1:1"]).start()


# ---------------------------------------------------------------------- retries, against a fake
class FlakyPrometheus:
    """Answers from a script of (status, body) per request, then repeats the last one."""

    def __init__(self, script: list[tuple[int, object]]) -> None:
        self.script, self.hits = script, []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.url = ""
        self.thread = threading.Thread(target=self._serve, daemon=True)

    async def handle(self, request: web.Request) -> web.Response:
        self.hits.append(dict(request.query))
        status, body = self.script[min(len(self.hits), len(self.script)) - 1]
        text = body if isinstance(body, str) else json.dumps(body)
        return web.Response(status=status, text=text, content_type="application/json")

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_get("/api/v1/query", self.handle)
        app.router.add_get("/api/v1/query_range", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        self.ready.set()
        self.loop.run_forever()

    def __enter__(self) -> FlakyPrometheus:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_retries_503_twice_then_answers():
    with FlakyPrometheus([(503, "Service Unavailable"), (503, "Service Unavailable"), (200, VECTOR)]) as fake, \
            PrometheusClient(fake.url, retry_for_s=10, backoff_s=0.01) as pc:
        result = pc.query("up", at=1700000000.5)
    assert len(fake.hits) == 3 and fake.hits[-1] == {"query": "up", "time": "1700000000.500"}
    assert result.measured and result.samples[0].labels == {"__name__": "up", "job": "x"}
    assert result.samples[0].value == 1.0 and result.samples[0].t == 1700000000.5


@pytest.mark.parametrize("status", [429, 502, 504])
def test_other_retryable_statuses(status):
    with FlakyPrometheus([(status, "busy"), (200, VECTOR)]) as fake, \
            PrometheusClient(fake.url, backoff_s=0.01) as pc:
        assert pc.query("up").measured
    assert len(fake.hits) == 2


def test_retries_stop_at_the_deadline_with_one_clear_error():
    with FlakyPrometheus([(503, "Service Unavailable")]) as fake, \
            PrometheusClient(fake.url, retry_for_s=0.5, backoff_s=0.05, max_backoff_s=0.1) as pc:
        t0 = time.monotonic()
        with pytest.raises(PrometheusError, match=r"answered HTTP 503 to query 'up' \(retried 0.5s\)"):
            pc.query("up")
    assert time.monotonic() - t0 < 5 and len(fake.hits) >= 2


def test_an_error_answer_is_not_retried():
    error = {"status": "error", "errorType": "execution", "error": "query timed out in expression evaluation"}
    with FlakyPrometheus([(422, error), (200, VECTOR)]) as fake, PrometheusClient(fake.url, backoff_s=0.01) as pc:
        with pytest.raises(PrometheusError, match="rejected query 'up': execution: query timed out"):
            pc.query("up")
    assert len(fake.hits) == 1


def test_range_result_and_nan_points():
    matrix = {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {}, "values": [[1700000000, "NaN"], [1700000001, "0.25"], [1700000002, "0.5"]]}]}}
    only_nan = {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {}, "values": [[1700000000, "NaN"]]}]}}
    with FlakyPrometheus([(200, matrix), (200, matrix), (200, only_nan)]) as fake, \
            PrometheusClient(fake.url) as pc:
        result = pc.query_range("q", 1700000000, 1700000002, 1)
        assert fake.hits[0] == {"query": "q", "start": "1700000000.000", "end": "1700000002.000", "step": "1"}
        assert result.series[0].points[1:] == ((1700000001.0, 0.25), (1700000002.0, 0.5))
        assert PromSlo("p99", "q", reduce="max").observe(pc, 1700000000, 1700000002) == (0.5, None)
        value, why = PromSlo("p99", "q").observe(pc, 1700000000, 1700000002)
        assert value is None and "only NaN" in why


def test_unreachable_prometheus_is_one_clear_error():
    port = free_port()
    with PrometheusClient(f"http://127.0.0.1:{port}", retry_for_s=0.3, backoff_s=0.05) as pc:
        with pytest.raises(PrometheusError, match=f"127.0.0.1:{port} unreachable for query 'up'"):
            pc.query("up")


def test_not_json_is_one_clear_error():
    with FlakyPrometheus([(200, "<html>login</html>")]) as fake, PrometheusClient(fake.url) as pc:
        with pytest.raises(PrometheusError, match="no JSON"):
            pc.query("up")
