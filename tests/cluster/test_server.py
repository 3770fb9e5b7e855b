"""The reference inference server, run as a real process against the real stores.

Nothing is mocked: the server, the model store and the feature store are subprocesses on
free loopback ports, each in its own process group that teardown kills, and the virtual
GPU is the same file ledger a GPU-OOM hog would use. Waits poll a condition with a
deadline; nothing sleeps to synchronise.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest

from inferchaos.targets.local import model as mdl
from inferchaos.targets.local.vgpu import GIB, MIB, VirtualDevice
from inferchaos.ground.ports import free_port
from tests.support.waiting import wait_for

#: what a server still starting (or gone) answers: not yet, not a failure
HTTP_DOWN = (httpx.TransportError, OSError)
ROOT = Path(__file__).resolve().parents[2]
MODEL = mdl.Model("mlp", mdl.generate_weights("mlp"))
ROW_A = [float(i) / 7 - 1 for i in range(16)]
ROW_B = [((i * 37) % 11) / 3 - 2 for i in range(16)]


@dataclass
class Proc:
    popen: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"process still running after {timeout}s:\n{self.output()}") from None


@dataclass
class Launcher:
    tmp: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, module: str, *args: str, port: int | None = None) -> Proc:
        port = port or free_port()
        log = self.tmp / f"{module}-{port}.log"
        popen = subprocess.Popen(
            [sys.executable, "-m", f"inferchaos.targets.local.{module}", "--port", str(port), *args],
            cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        proc = Proc(popen, port, log)
        self.procs.append(proc)
        return proc

    def store(self, module: str, port: int | None = None) -> Proc:
        proc = self.start(module, port=port)
        wait_for(lambda: httpx.get(f"{proc.url}/health").status_code == 200, 15, f"{module} up", tolerate=HTTP_DOWN)
        return proc

    def server(self, model_store: Proc | str, feature_store: Proc | str, *args: str, ready: bool = True) -> Proc:
        ms = model_store if isinstance(model_store, str) else model_store.url
        fs = feature_store if isinstance(feature_store, str) else feature_store.url
        port = free_port()
        proc = self.start("server", "--name", f"replica-{port}", "--model-store", ms, "--feature-store", fs,
                          *args, port=port)
        if ready:
            wait_for(lambda: get(proc, "/v2/health/ready").status_code == 200 or proc.popen.poll() is not None,
                     20, "server ready", tolerate=HTTP_DOWN)
            assert proc.popen.poll() is None, proc.output()
        return proc

    def kill_all(self) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.popen.wait(10)


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    launch = Launcher(tmp_path_factory.mktemp("server"))
    try:
        yield launch
    finally:
        launch.kill_all()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Launcher]:
    launch = Launcher(tmp_path)
    try:
        yield launch
    finally:
        launch.kill_all()


@pytest.fixture(scope="module")
def stores(launcher: Launcher) -> tuple[Proc, Proc]:
    return launcher.store("modelstore"), launcher.store("featurestore")


@pytest.fixture(scope="module")
def server(launcher: Launcher, stores: tuple[Proc, Proc]) -> Proc:
    return launcher.server(*stores)


def get(proc: Proc, path: str, **kw) -> httpx.Response:
    return httpx.get(proc.url + path, timeout=10, **kw)


def post(proc: Proc, path: str, body: object, **kw) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(proc.url + path, content=content, timeout=10, **kw)


def infer_body(rows: list[list[float]], nested: bool = True) -> dict:
    data = rows if nested else [v for r in rows for v in r]
    return {"inputs": [{"name": "input", "shape": [len(rows), 16], "datatype": "FP32", "data": data}]}


def expected(rows: list[list[float]]) -> list[float]:
    return MODEL.forward(np.asarray(rows, dtype=np.float32)).reshape(-1).tolist()


def make_device(tmp: Path, capacity: int) -> VirtualDevice:
    return VirtualDevice.create(tmp / "vgpu", 0, capacity)


# ---------------------------------------------------------------------------- tests
def test_not_ready_until_weights_are_loaded(procs: Launcher) -> None:
    store_port = free_port()
    srv = procs.server(f"http://127.0.0.1:{store_port}", f"http://127.0.0.1:{free_port()}", ready=False)
    wait_for(lambda: get(srv, "/v2/health/live").status_code == 200, 15, "live", tolerate=HTTP_DOWN)
    for path in ("/v2/health/ready", "/v2/models/mlp/ready"):
        r = get(srv, path)
        assert (r.status_code, r.content) == (400, b"")
    assert post(srv, "/v2/models/mlp/infer", infer_body([ROW_A])).status_code == 503

    procs.store("modelstore", port=store_port)
    wait_for(lambda: get(srv, "/v2/health/ready").status_code == 200, 15, "ready once the store is up", tolerate=HTTP_DOWN)
    assert get(srv, "/v2/models/mlp/ready").status_code == 200
    r = post(srv, "/v2/models/mlp/infer", infer_body([ROW_A]))
    assert r.status_code == 200
    # The feature store never answered: nothing to report, and the numbers are unaffected.
    assert r.headers["x-inferchaos-feature-version"] == "" and r.headers["x-inferchaos-feature-age-s"] == ""
    assert r.json()["parameters"]["feature_version"] is None and r.json()["outputs"][0]["data"] == expected([ROW_A])


def test_infer_equals_forward_and_is_identical_across_processes(
    launcher: Launcher, stores: tuple[Proc, Proc], server: Proc
) -> None:
    other = launcher.server(*stores, "--max-batch-size", "3", "--max-queue-delay-ms", "20")
    rows = [ROW_A, ROW_B, [0.5] * 16]
    answers = []
    for srv, nested in ((server, True), (other, False)):
        r = post(srv, "/v2/models/mlp/infer", {"id": "req-1", **infer_body(rows, nested)})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model_name"] == "mlp" and body["model_version"] == "1" and body["id"] == "req-1"
        out = body["outputs"][0]
        assert (out["name"], out["shape"], out["datatype"]) == ("probabilities", [3, 8], "FP32")
        assert out["data"] == expected(rows)
        answers.append(json.dumps(out))
    assert answers[0] == answers[1]

    # Concurrent requests share batches in whatever mix; each answer is still exact.
    requests = [[ROW_A], [ROW_B, ROW_A], [ROW_B], rows, [[1.0] * 16], [ROW_A, ROW_A]]
    results: dict[int, list[float]] = {}

    def call(i: int) -> None:
        results[i] = post(other, "/v2/models/mlp/infer", infer_body(requests[i])).json()["outputs"][0]["data"]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert all(results[i] == expected(req) for i, req in enumerate(requests))


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        {"inputs": "x"},
        {"inputs": [{"name": "input", "shape": [1, 15], "datatype": "FP32", "data": [0.0] * 15}]},
        {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "INT32", "data": [0] * 16}]},
        {"inputs": [{"name": "input", "shape": [2, 16], "datatype": "FP32", "data": [0.0] * 16}]},
        {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": ["1"] * 16}]},
        {"inputs": [{"name": "other", "shape": [1, 16], "datatype": "FP32", "data": [0.0] * 16}]},
    ],
    ids=["json", "inputs", "shape", "datatype", "size", "strings", "name"],
)
def test_infer_validation_errors(server: Proc, body: object) -> None:
    r = post(server, "/v2/models/mlp/infer", body)
    assert r.status_code == 400 and r.json()["error"]
    assert r.headers["x-inferchaos-replica"].startswith("replica-")


def test_protocol_metadata_and_errors(server: Proc) -> None:
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/mlp/ready", "/health"):
        r = get(server, path)
        assert (r.status_code, r.content) == (200, b""), path
        assert r.headers["x-inferchaos-replica"] == f"replica-{server.port}"
    assert get(server, "/v2").json() == {"name": "inferchaos-reference", "version": "0.1.0", "extensions": []}
    meta = get(server, "/v2/models/mlp").json()
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 16]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 8]}]
    for r in (get(server, "/v2/models/nope"), post(server, "/v2/models/nope/infer", infer_body([ROW_A])),
              get(server, "/no/such/path"),
              post(server, "/v1/completions", {"model": "nope", "prompt": "hi"}),
              post(server, "/v1/completions", {"prompt": "hi", "max_tokens": 0})):
        assert r.status_code in (400, 404) and "error" in r.json()
        assert r.headers["x-inferchaos-replica"] == f"replica-{server.port}"


def test_completion(server: Proc) -> None:
    r = post(server, "/v1/completions", {"model": "mlp", "prompt": "the quick brown fox", "max_tokens": 7})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "text_completion" and body["model"] == "mlp"
    choice = body["choices"][0]
    assert choice["text"] == " ".join(MODEL.generate("the quick brown fox", 7))
    assert (choice["index"], choice["finish_reason"], choice["logprobs"]) == (0, "length", None)
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 7, "total_tokens": 11}


def read_stream(srv: Proc, prompt: str, max_tokens: int, started: threading.Event | None = None) -> tuple[int, bytes]:
    body = {"prompt": prompt, "max_tokens": max_tokens, "stream": True}
    raw = b""
    with httpx.Client(timeout=30) as client, client.stream("POST", srv.url + "/v1/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for part in r.iter_raw():
            raw += part
            if started is not None:
                started.set()
        return r.status_code, raw


def stream_texts(raw: bytes) -> tuple[list[dict], bool]:
    """The chunks of an SSE body, and whether it ended with [DONE]."""
    assert raw.endswith(b"\n\n")
    events = raw[:-2].split(b"\n\n")
    assert all(e.startswith(b"data: ") for e in events)
    done = events[-1] == b"data: [DONE]"
    return [json.loads(e[6:]) for e in (events[:-1] if done else events)], done


def test_completion_stream(server: Proc) -> None:
    status, raw = read_stream(server, "stream me please", 6)
    chunks, done = stream_texts(raw)
    assert status == 200 and done and len(chunks) == 6
    words = MODEL.generate("stream me please", 6)
    assert [c["choices"][0]["text"] for c in chunks] == [words[0]] + [" " + w for w in words[1:]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == " ".join(words)
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 5 + ["length"]


def test_feature_version_and_age(server: Proc, stores: tuple[Proc, Proc]) -> None:
    put = httpx.put(f"{stores[1].url}/features/default",
                    json={"version": 7, "values": [1.0, 2.0], "updated_at": time.time() - 5}, timeout=5)
    assert put.status_code == 204

    def features() -> tuple[str, float]:
        r = post(server, "/v2/models/mlp/infer", infer_body([ROW_A]))
        assert r.json()["parameters"]["feature_version"] == int(r.headers["x-inferchaos-feature-version"])
        assert r.json()["parameters"]["feature_age_s"] == pytest.approx(float(r.headers["x-inferchaos-feature-age-s"]),
                                                                        abs=1e-3)
        assert r.json()["outputs"][0]["data"] == expected([ROW_A])  # features never change the numbers
        return r.headers["x-inferchaos-feature-version"], float(r.headers["x-inferchaos-feature-age-s"])

    version, age = features()
    assert version == "7" and age >= 5
    # Nobody publishes: the same record is reported, older each time.
    wait_for(lambda: features()[1] > age + 0.2, 5, "feature age to grow", tolerate=HTTP_DOWN)
    assert features()[0] == "7"


def test_metrics_names(server: Proc) -> None:
    post(server, "/v1/completions", {"prompt": "warm", "max_tokens": 2})
    r = get(server, "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    types = dict(line.split()[2:4] for line in r.text.splitlines() if line.startswith("# TYPE"))
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                 "nv_inference_pending_request_count", "nv_gpu_memory_used_bytes", "nv_gpu_memory_total_bytes"):
        assert types.get(name) == "gauge", name
    for name in ("vllm:time_to_first_token_seconds", "vllm:e2e_request_latency_seconds",
                 "vllm:request_queue_time_seconds"):
        assert types.get(name) == "histogram", name
    # prometheus-client names a counter's family and sample `<name>_total`; Triton's has no suffix.
    assert types.get("nv_inference_queue_duration_us_total") == "counter"
    assert "_created" not in r.text
    assert 'vllm:time_to_first_token_seconds_count{model_name="mlp"}' in r.text
    assert 'nv_gpu_memory_total_bytes{gpu_uuid="vgpu-0"}' in r.text


def start_streams(srv: Proc, n: int, max_tokens: int) -> tuple[list[threading.Thread], dict[int, tuple[int, bytes]]]:
    results: dict[int, tuple[int, bytes]] = {}
    started = [threading.Event() for _ in range(n)]

    def run(i: int) -> None:
        results[i] = read_stream(srv, f"prompt number {i}", max_tokens, started[i])

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    wait_for(lambda: all(e.is_set() for e in started), 15, "streams to start", tolerate=HTTP_DOWN)
    return threads, results


def test_sigterm_drains_in_flight(procs: Launcher, stores: tuple[Proc, Proc]) -> None:
    srv = procs.server(*stores, "--token-latency-ms", "25", "--shutdown-timeout-s", "20")
    warm = [httpx.Client(timeout=10) for _ in range(2)]  # keep-alive connections opened before SIGTERM
    for c in warm:
        assert c.get(srv.url + "/v2/health/live").status_code == 200
    threads, results = start_streams(srv, 3, 60)
    srv.popen.send_signal(signal.SIGTERM)

    wait_for(lambda: warm[0].get(srv.url + "/health").status_code == 503, 5, "/health 503 while draining", tolerate=HTTP_DOWN)
    r = warm[1].post(srv.url + "/v2/models/mlp/infer", json=infer_body([ROW_A]))
    assert (r.status_code, r.json()) == (503, {"error": "draining"})
    with pytest.raises(httpx.ConnectError):
        httpx.get(srv.url + "/v2/health/live", timeout=2)
    assert any(t.is_alive() for t in threads), "streams ended before the checks; make them longer"

    assert srv.wait_exit(15) == 0
    for t in threads:
        t.join(5)
    for i in range(3):
        status, raw = results[i]
        chunks, done = stream_texts(raw)
        assert status == 200 and done
        assert "".join(c["choices"][0]["text"] for c in chunks) == " ".join(MODEL.generate(f"prompt number {i}", 60))
    assert "SIGTERM" in srv.output()
    for c in warm:
        c.close()


def test_shutdown_timeout_aborts_the_rest(procs: Launcher, stores: tuple[Proc, Proc]) -> None:
    srv = procs.server(*stores, "--token-latency-ms", "50", "--shutdown-timeout-s", "0.5")
    threads, results = start_streams(srv, 1, 400)
    plain: dict[str, httpx.Response] = {}
    waiter = threading.Thread(target=lambda: plain.setdefault(
        "r", post(srv, "/v1/completions", {"prompt": "long one", "max_tokens": 400})), daemon=True)
    waiter.start()
    wait_for(lambda: "vllm:num_requests_running{model_name=\"mlp\"} 2.0" in get(srv, "/metrics").text, 10,
             "both requests decoding", tolerate=HTTP_DOWN)
    t0 = time.monotonic()
    srv.popen.send_signal(signal.SIGTERM)
    assert srv.wait_exit(10) == 0
    assert time.monotonic() - t0 < 5
    waiter.join(5)
    threads[0].join(5)
    assert plain["r"].status_code == 500 and plain["r"].json() == {"error": "aborted: shutdown timeout"}
    status, raw = results[0]
    chunks, done = stream_texts(raw)
    assert status == 200 and not done and chunks[-1] == {"error": "aborted: shutdown timeout"}
    assert 1 <= len(chunks) - 1 < 400


def fill_device(dev: VirtualDevice) -> None:
    dev.allocate(dev.usage().free, tag="test-hog")


def test_oom_exit_mode(procs: Launcher, stores: tuple[Proc, Proc], tmp_path: Path) -> None:
    dev = make_device(tmp_path, 4 * GIB)
    srv = procs.server(*stores, "--vgpu-dir", str(tmp_path / "vgpu"), "--weights-bytes", str(1 * GIB),
                       "--batch-bytes-per-item", str(64 * MIB))
    assert post(srv, "/v2/models/mlp/infer", infer_body([ROW_A])).status_code == 200
    fill_device(dev)
    try:
        with httpx.Client(timeout=10) as client:
            r = client.post(srv.url + "/v2/models/mlp/infer", json=infer_body([ROW_A]))
            assert r.status_code == 500 and "CUDA out of memory" in r.json()["error"]
            assert r.headers["x-inferchaos-replica"] == f"replica-{srv.port}"
            assert client.get(srv.url + "/health").status_code == 503
            assert client.get(srv.url + "/v2/health/ready").status_code == 400
        assert srv.wait_exit(10) == 1
        assert "CUDA out of memory" in srv.output()
        assert dev.usage().allocations == {f"{os.getpid()}/test-hog": 3 * GIB}  # its memory went with it
    finally:
        dev.free("test-hog")


def test_oom_reject_mode(procs: Launcher, stores: tuple[Proc, Proc], tmp_path: Path) -> None:
    dev = make_device(tmp_path, 4 * GIB)
    srv = procs.server(*stores, "--vgpu-dir", str(tmp_path / "vgpu"), "--weights-bytes", str(1 * GIB),
                       "--oom", "reject")
    fill_device(dev)
    try:
        r = post(srv, "/v1/completions", {"prompt": "no room", "max_tokens": 3})
        assert r.status_code == 500 and "CUDA out of memory" in r.json()["error"]
        assert get(srv, "/health").status_code == 200 and get(srv, "/v2/health/ready").status_code == 200
    finally:
        dev.free("test-hog")
    r = post(srv, "/v2/models/mlp/infer", infer_body([ROW_B]))
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == expected([ROW_B])
    assert srv.popen.poll() is None
    assert 'nv_gpu_memory_used_bytes{gpu_uuid="vgpu-0"} 1.073741824e+09' in get(srv, "/metrics").text


def test_bad_option_exits_2(procs: Launcher) -> None:
    proc = procs.start("server", "--name", "x", "--model-store", "http://a", "--feature-store", "http://b",
                       "--oom", "sometimes")
    assert proc.wait_exit(15) == 2


def test_a_slow_feature_store_costs_one_timeout_per_backoff_not_every_batch(procs: Launcher,
                                                                            stores: tuple[Proc, Proc]) -> None:
    """Feature reads time out after 200 ms; then the last features are reused for the backoff
    (1 s), so a black-holed store does not add 200 ms to every batch. With no backoff it does."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)  # accepts connections (the kernel does), never answers
    try:
        black_hole = f"http://127.0.0.1:{hole.getsockname()[1]}"
        breaker = procs.server(stores[0], black_hole)
        no_breaker = procs.server(stores[0], black_hole, "--feature-backoff-ms", "0")

        def latencies(srv: Proc, n: int) -> list[float]:
            out = []
            for _ in range(n):
                started = time.monotonic()
                assert post(srv, "/v2/models/mlp/infer", infer_body([ROW_A])).status_code == 200
                out.append(time.monotonic() - started)
            return out

        time.sleep(1.2)  # past any backoff started by the warm-up
        first, *rest = latencies(breaker, 5)
        assert first >= 0.2, "the first read after the backoff waits for its timeout"
        assert max(rest) < 0.15, f"reads inside the backoff must not wait: {rest}"
        assert min(latencies(no_breaker, 4)) >= 0.2, "without the breaker every batch pays the timeout"
    finally:
        hole.close()
