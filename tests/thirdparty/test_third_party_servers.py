"""Smoke tests of the real third-party servers the chaos suite can run as replicas.

Why: experiments against vLLM and MLServer rely on behaviour these servers have, not
behaviour we wrote: readiness paths, the OpenAI streaming format, vLLM's own latency
metrics, MLServer's model metadata. Each test module run starts ONE replica of each
server exactly as the local cluster's supervisor would (same command template, own
process group, free port), checks that behaviour, and checks that stopping the group
leaves nothing running and that no fixed port was bound (several replicas share a box).

Needs `tests/servers/install.sh` to have run; skips (with the reason) otherwise. Nothing
is downloaded: the models are built locally on first use and cached.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from tests.servers import MLSERVER, VLLM, ThirdPartyServer
from tests.servers.procinfo import end_groups, group_members, listening_ports, rss_mib
from tests.servers.sklearn_model import INPUT_NAME, N_FEATURES

# The `thirdparty` marker is registered in pyproject.toml by the project's owner.
pytestmark = pytest.mark.thirdparty


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Replica:
    server: ThirdPartyServer
    proc: subprocess.Popen
    port: int
    ready_s: float
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 25) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _wait_ready(rep: Replica, t0: float) -> None:
    deadline = t0 + rep.server.startup_timeout_s
    with httpx.Client(timeout=2.0) as http:
        while True:
            if rep.proc.poll() is not None:
                pytest.fail(f"{rep.server.name} exited with {rep.proc.returncode} before ready:\n{rep.log_tail()}")
            try:
                if http.get(rep.url + rep.server.ready_path).status_code == 200:
                    rep.ready_s = time.monotonic() - t0
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{rep.server.name} not ready within {rep.server.startup_timeout_s:.0f} s:\n{rep.log_tail()}")
            time.sleep(0.2)


def _run(server: ThirdPartyServer, log_dir: Path) -> Iterator[Replica]:
    reason = server.available()
    if reason:
        pytest.skip(reason)
    server.prepare()
    port = free_port()
    log = log_dir / f"{server.name}.log"
    t0 = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(server.command(port), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    rep = Replica(server, proc, port, 0.0, log)
    try:
        _wait_ready(rep, t0)
        members = group_members(proc.pid)
        print(f"\n{server.name}: ready in {rep.ready_s:.1f} s, {len(members)} processes, "
              f"RSS {rss_mib(members):.0f} MiB, listening on {sorted(listening_ports(members))} (HTTP {port})")
        yield rep
    finally:
        stubborn = end_groups([proc.pid], grace_s=10.0)
        proc.wait(timeout=10)
        left = group_members(proc.pid)
        assert not left, f"{server.name}: processes {left} outlived SIGKILL of their group"
        assert not stubborn, f"{server.name}: {stubborn} ignored SIGTERM for 10 s"


@pytest.fixture(scope="module")
def mlserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    yield from _run(MLSERVER, tmp_path_factory.mktemp("mlserver"))


@pytest.fixture(scope="module")
def vllm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    yield from _run(VLLM, tmp_path_factory.mktemp("vllm"))


def test_replica_cmds_fit_the_local_cluster_spec() -> None:
    """The templates must survive ClusterSpec's own checks (format + shlex.split)."""
    from inferchaos.targets.local.spec import ClusterSpec

    for server in (VLLM, MLSERVER):
        ClusterSpec(replica_cmd=server.replica_cmd(), ready_path=server.ready_path).validate()
        argv = server.command(4321)
        assert argv[0] == "env" and "4321" in " ".join(argv)


# ------------------------------------------------------------------ MLServer (OIP)

def test_mlserver_lists_declared_inputs(mlserver: Replica) -> None:
    meta = httpx.get(f"{mlserver.url}/v2/models/{MLSERVER.model_name}", timeout=5).json()
    assert meta["name"] == MLSERVER.model_name
    assert meta["inputs"] == [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, N_FEATURES]}]


def test_mlserver_infers(mlserver: Replica) -> None:
    rows = [[0.1 * (i + j) for j in range(N_FEATURES)] for i in range(3)]
    body = {"inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [3, N_FEATURES],
                        "data": [x for row in rows for x in row]}]}
    answers = []
    for _ in range(2):
        r = httpx.post(f"{mlserver.url}/v2/models/{MLSERVER.model_name}/infer", json=body, timeout=10)
        assert r.status_code == 200, r.text
        answers.append(r.json()["outputs"])
    out = answers[0][0]
    assert out["name"] == "predict" and len(out["data"]) == 3
    assert set(out["data"]) <= {0, 1, 2}
    assert answers[0] == answers[1]


def test_mlserver_binds_no_fixed_port(mlserver: Replica) -> None:
    """Defaults are gRPC 8081 and metrics 8082: a second replica would fail to bind."""
    ports = listening_ports(group_members(mlserver.proc.pid))
    assert mlserver.port in ports
    assert not ports & {8080, 8081, 8082}, ports
    assert len(ports) == 2, f"expected HTTP + a kernel-chosen gRPC port, got {sorted(ports)}"


# ------------------------------------------------------------------ vLLM (OpenAI)

def _stream_completion(url: str, prompt: str) -> tuple[str, list[dict], list[str]]:
    body = {"model": VLLM.model_name, "prompt": prompt, "stream": True, "temperature": 0,
            "max_tokens": 16, "ignore_eos": True, "stream_options": {"include_usage": True}}
    chunks: list[dict] = []
    data_lines: list[str] = []
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                data_lines.append(line)
                if line != "data: [DONE]":
                    chunks.append(json.loads(line[len("data: "):]))
    text = "".join(c["choices"][0]["text"] for c in chunks if c.get("choices"))
    return text, chunks, data_lines


def test_vllm_lists_model(vllm: Replica) -> None:
    models = httpx.get(f"{vllm.url}/v1/models", timeout=5).json()
    assert [m["id"] for m in models["data"]] == [VLLM.model_name]


def test_vllm_streams_deterministically(vllm: Replica) -> None:
    first, chunks, lines = _stream_completion(vllm.url, "The quick brown fox")
    assert lines[-1] == "data: [DONE]"
    assert len([c for c in chunks if c.get("choices")]) >= 2, "expected several SSE chunks"
    usage = [c["usage"] for c in chunks if c.get("usage")]
    assert usage and usage[-1]["completion_tokens"] == 16
    assert first
    second, _, _ = _stream_completion(vllm.url, "The quick brown fox")
    assert second == first, "temperature 0 must give the same text"


def test_vllm_chat(vllm: Replica) -> None:
    body = {"model": VLLM.model_name, "messages": [{"role": "user", "content": "Hello"}],
            "max_tokens": 8, "temperature": 0}
    r = httpx.post(f"{vllm.url}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["role"] == "assistant"


def test_vllm_metrics(vllm: Replica) -> None:
    _stream_completion(vllm.url, "Hello")
    text = httpx.get(f"{vllm.url}/metrics", timeout=5).text
    for name in ("vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds",
                 "vllm:num_requests_waiting"):
        assert name in text, name
    counts = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("vllm:time_to_first_token_seconds_count")]
    assert counts and sum(counts) >= 1
