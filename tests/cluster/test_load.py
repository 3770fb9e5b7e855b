"""The load generator: real locust processes against a real local cluster, and against a
tiny aiohttp server that misbehaves on purpose (empty 200s, 503s, truncated bodies and
streams, dropped connections)."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from aiohttp import web

from inferchaos.ground.errors import UsageError
from inferchaos.load import runner as runner_mod
from inferchaos.load.records import (
    RequestLogTail,
    RequestRecord,
    SSEScanner,
    check_completion_body,
    check_infer_body,
    parse_mix,
    part_paths,
    read_log,
)
from inferchaos.load.runner import LoadProfile, LoadRunner, LoadStartError
from inferchaos.targets.local import ClusterSpec, LocalCluster
from tests.support.leftovers import assert_nothing_left
from inferchaos.ground.procs import group_members
from tests.support.loadrun import collect

pytestmark = pytest.mark.cluster


# --------------------------------------------------------------------------- helpers
# --------------------------------------------------------------------------- a real cluster
@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("cluster")
    with LocalCluster(ClusterSpec(replicas=2), state_dir, owner_pid=os.getpid()) as c:
        yield c
    assert_nothing_left(state_dir)


@pytest.fixture(scope="module")
def run_one(cluster, tmp_path_factory):
    """One 1-process run with every task kind; yields (runner, records seen live, merged records)."""
    out = tmp_path_factory.mktemp("load1")
    load = LoadRunner(cluster.lb_url, out / "requests.jsonl",
                      LoadProfile(users=4, spawn_rate=100, mix="infer=2,completion=1,stream=1", max_tokens=4))
    try:
        load.start()
        pgid = load.pgid
        assert group_members(pgid), "locust is not running"
        live = collect(load, lambda rs: {"infer", "completion", "stream"} <= {r.kind for r in rs}
                       and len({r.replica for r in rs}) >= 2 and len(rs) >= 40)
        merged = load.stop()
    finally:
        load.stop()
    yield load, live, merged, pgid


def test_records_have_every_field_with_plausible_values(run_one):
    load, live, merged, _ = run_one
    assert merged and merged == load.records() == read_log(load.log_path)
    assert [r.start for r in merged] == sorted(r.start for r in merged)
    now_mono, now_wall = time.monotonic(), time.time()
    for r in merged:
        assert r.kind in ("infer", "completion", "stream")
        assert r.ok and r.status == 200 and r.error is None, r
        assert 0 < r.latency_s < 30
        assert now_mono - 120 < r.start < now_mono and now_wall - 120 < r.wall < now_wall
        assert r.replica in ("replica-1", "replica-2")
        assert isinstance(r.feature_version, int) and r.feature_version >= 1
        assert isinstance(r.feature_age_s, float) and 0 <= r.feature_age_s < 60
        host, _, pid = r.worker.rpartition(":")
        assert host and pid.isdigit()
        assert (r.ttft_s is not None) == (r.kind == "stream")
        # infer answers carry their top-class probability, for the drift probe
        assert (r.prediction is not None) == (r.kind == "infer")
        assert r.prediction is None or 1 / 8 <= r.prediction <= 1
    # the JSON lines round-trip exactly
    lines = load.log_path.read_text().splitlines()
    assert len(lines) == len(merged)
    assert RequestRecord.from_dict(json.loads(lines[0])) == merged[0]
    assert set(json.loads(lines[0])) == {"start", "wall", "latency_s", "kind", "status", "ok", "error", "replica",
                                         "ttft_s", "feature_version", "feature_age_s", "worker", "prediction",
                                         "lag_s", "tokens", "itl_ms", "incomplete", "prompt", "text_sha"}


def test_live_tail_sees_records_once_and_all_end_in_the_merged_log(run_one):
    _, live, merged, _ = run_one
    keys = [(r.worker, r.start, r.kind) for r in live]
    assert len(keys) == len(set(keys)), "the tail returned a record twice"
    assert set(keys) <= {(r.worker, r.start, r.kind) for r in merged}
    assert len(merged) >= len(live) >= 40


def test_both_replicas_served(run_one):
    _, _, merged, _ = run_one
    assert Counter(r.replica for r in merged).keys() == {"replica-1", "replica-2"}


def test_streaming_records_have_ttft_below_latency(run_one):
    _, _, merged, _ = run_one
    streams = [r for r in merged if r.kind == "stream"]
    assert streams
    for r in streams:
        assert 0 < r.ttft_s < r.latency_s, r


def test_stop_empties_the_process_group_and_is_idempotent(run_one):
    load, _, merged, pgid = run_one
    assert group_members(pgid) == []
    assert not load.running()
    assert load.exit_code == 0
    assert load.stop() == merged  # again: same answer, nothing re-merged
    assert part_paths(load.log_path) == []
    assert "Shutting down" in load.locust_log.read_text()


def test_two_processes_give_one_merged_log_from_every_worker(cluster, tmp_path):
    log = tmp_path / "requests.jsonl"
    with LoadRunner(cluster.lb_url, log, LoadProfile(users=4, spawn_rate=100, processes=2, mix="infer=1")) as load:
        pgid = load.pgid
        collect(load, lambda rs: len({r.worker for r in rs}) >= 2 and len(rs) >= 20)
    assert group_members(pgid) == []
    records = read_log(log)
    workers = Counter(r.worker for r in records)
    assert len(workers) >= 2, workers
    assert all(r.ok and r.kind == "infer" for r in records)
    assert [r.start for r in records] == sorted(r.start for r in records)
    assert part_paths(log) == []


def test_a_load_that_ignores_sigint_is_killed_as_a_group(cluster, tmp_path, monkeypatch):
    monkeypatch.setattr(runner_mod, "STOP_TIMEOUT_S", 1.0)
    load = LoadRunner(cluster.lb_url, tmp_path / "requests.jsonl", LoadProfile(users=2, mix="infer=1"))
    try:
        load.start()
        pgid = load.pgid
        os.killpg(pgid, 19)  # SIGSTOP: SIGINT stays pending, only SIGKILL can end it
        t0 = time.monotonic()
        records = load.stop()
        assert time.monotonic() - t0 < 12
    finally:
        load.stop()
    assert group_members(pgid) == []
    assert load.exit_code == -9
    assert records and all(r.ok for r in records)  # what was flushed is kept; a torn line is not
    assert read_log(tmp_path / "requests.jsonl") == records


# --------------------------------------------------------------------------- a target that misbehaves
GOOD_INFER = json.dumps({"outputs": [{"name": "probabilities", "shape": [1, 8], "datatype": "FP32",
                                       "data": [0.125] * 8}]}).encode()
GOOD_COMPLETION = json.dumps({"object": "text_completion", "choices": [{"index": 0, "text": "alpha bravo"}]}).encode()


def sse(text: str) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "text": text}]}).encode() + b"\n\n"


class BadTarget:
    """Cycles, per task kind, through ways of answering; the behaviour is named in the
    replica header so each record can be matched with what was done to it."""

    BEHAVIOURS = {
        "infer": ["good", "empty", "e503", "truncated", "short", "dropped"],
        "completion": ["good", "empty", "e503", "emptytext"],
        "stream": ["slow", "nodone", "aborted", "empty", "e503"],
    }

    def __init__(self) -> None:
        self.counters: Counter = Counter()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.url = ""
        self._runner: web.AppRunner | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def next(self, kind: str) -> str:
        options = self.BEHAVIOURS[kind]
        self.counters[kind] += 1
        return options[(self.counters[kind] - 1) % len(options)]

    async def infer(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        how = self.next("infer")
        h = {"x-inferchaos-replica": how, "x-inferchaos-feature-version": "", "x-inferchaos-feature-age-s": "x"}
        if how == "good":
            return web.Response(body=GOOD_INFER, content_type="application/json", headers=h)
        if how == "empty":
            return web.Response(status=200, body=b"", headers=h)
        if how == "e503":
            return web.Response(status=503, text="draining", headers=h)
        if how == "short":  # valid JSON, wrong shape
            return web.Response(body=b'{"outputs":[{"data":[1.0,2.0]}]}', content_type="application/json", headers=h)
        if how == "truncated":  # headers promise 400 bytes; the replica dies after 20
            resp = web.StreamResponse(status=200, headers=h)
            resp.content_length = 400
            await resp.prepare(request)
            await resp.write(GOOD_INFER[:20])
            await asyncio.sleep(0.02)
            request.transport.abort()
            return resp
        # dropped: the connection closes with no response at all
        request.transport.abort()
        return web.Response(status=200, headers=h)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        kind = "stream" if body.get("stream") else "completion"
        how = self.next(kind)
        h = {"x-inferchaos-replica": how, "x-inferchaos-feature-version": "7", "x-inferchaos-feature-age-s": "1.5"}
        if how == "e503":
            return web.Response(status=503, text="draining", headers=h)
        if kind == "completion":
            if how == "good":
                return web.Response(body=GOOD_COMPLETION, content_type="application/json", headers=h)
            if how == "emptytext":
                return web.json_response({"choices": [{"index": 0, "text": ""}]}, headers=h)
            return web.Response(status=200, body=b"", headers=h)
        resp = web.StreamResponse(status=200, headers={**h, "Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if how == "slow":  # the first token at once, then two more 150 ms apart
            for i, word in enumerate(("alpha", " bravo", " charlie")):
                if i:
                    await asyncio.sleep(0.15)
                await resp.write(sse(word))
            await resp.write(b"data: [DONE]\n\n")
        elif how == "nodone":
            await resp.write(sse("alpha"))
        elif how == "aborted":  # the replica dies mid-stream
            await resp.write(sse("alpha"))
            await asyncio.sleep(0.02)
            request.transport.abort()
            return resp
        await resp.write_eof()
        return resp

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_post("/v2/models/{name}/infer", self.infer)
        app.router.add_post("/v1/completions", self.completions)
        self._runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.ready.set()
        self.loop.run_forever()

    def __enter__(self) -> BadTarget:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        async def down():
            await self._runner.cleanup()
        asyncio.run_coroutine_threadsafe(down(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_misbehaving_target_gives_not_ok_records_with_the_reason(tmp_path):
    log = tmp_path / "requests.jsonl"
    every = {(k, b) for k, bs in BadTarget.BEHAVIOURS.items() for b in bs if b != "dropped"}
    with BadTarget() as target:
        with LoadRunner(target.url, log, LoadProfile(users=3, spawn_rate=100, mix="infer=2,completion=1,stream=1"),
                        timeout_s=5) as load:
            collect(load, lambda rs: every <= {(r.kind, r.replica) for r in rs}
                    and any(r.status == 0 for r in rs))
    by: dict[tuple[str, str | None], list[RequestRecord]] = defaultdict(list)
    for r in read_log(log):
        by[(r.kind, r.replica)].append(r)

    def only(kind, how):
        rs = by[(kind, how)]
        assert rs, f"no {kind} record answered {how!r}"
        return rs

    for r in only("infer", "good") + only("completion", "good") + only("stream", "slow"):
        assert r.ok and r.status == 200 and r.error is None, r
    for kind in ("infer", "completion", "stream"):
        for r in only(kind, "e503"):
            assert not r.ok and r.status == 503 and r.error == "HTTP 503", r
        for r in only(kind, "empty"):
            assert not r.ok and r.status == 200 and r.error == "empty body", r
    for r in only("infer", "short"):
        assert not r.ok and r.status == 200 and "8 numbers" in r.error, r
    for r in only("infer", "truncated"):
        assert not r.ok and r.status == 200 and r.error.startswith("truncated body"), r
    for r in only("completion", "emptytext"):
        assert not r.ok and r.error == "empty completion text", r
    for r in only("stream", "nodone"):
        assert not r.ok and r.status == 200 and r.error == "no [DONE]" and r.ttft_s is not None, r
    for r in only("stream", "aborted"):
        assert not r.ok and r.status == 200 and r.error.startswith("no [DONE]") and r.ttft_s is not None, r
    dropped = [r for r in by[("infer", None)]]
    assert dropped and all(not r.ok and r.status == 0 and r.error for r in dropped)
    # headers: empty string and garbage are None; numbers parse
    assert all(r.feature_version is None and r.feature_age_s is None for r in only("infer", "good"))
    assert all(r.feature_version == 7 and r.feature_age_s == 1.5 for r in only("completion", "good"))
    # a stream's first token is seen when it comes, not when the body ends
    for r in only("stream", "slow"):
        assert r.ttft_s < r.latency_s - 0.2, r
    # locust's own statistics count the failures too
    text = load.locust_log.read_text()
    assert "Aggregated" in text and "0(0.00%)" not in text.split("Aggregated", 1)[1].splitlines()[0]


def test_locust_that_cannot_start_raises_with_its_log(tmp_path):
    load = LoadRunner("http://127.0.0.1:9", tmp_path / "r.jsonl", LoadProfile(users=1),
                      extra_args=["--no-such-option"])
    with pytest.raises(LoadStartError, match="no-such-option"):
        load.start()
    assert load.stop() == []
    assert group_members(load.pgid) == []


# --------------------------------------------------------------------------- input checks
@pytest.mark.parametrize("kwargs", [
    {"users": 0}, {"users": -3}, {"users": 2.5}, {"spawn_rate": 0}, {"spawn_rate": -1.0}, {"processes": 0},
    {"mix": "infer=8,bogus=1"}, {"mix": "infer=0"}, {"mix": "infer"}, {"mix": "infer=x"}, {"mix": ""},
    {"model": ""}, {"max_tokens": 0}, {"rate": 0}, {"rate": -5.0}, {"rate": float("nan")}, {"rate": float("inf")},
    {"rate": True}, {"arrival": "bursty"}, {"max_in_flight": 0},
])
def test_bad_profile_is_a_usage_error(kwargs):
    with pytest.raises(UsageError) as err:
        LoadProfile(**kwargs)
    assert "\n" not in str(err.value)


def test_bad_host_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError):
        LoadRunner("localhost:8080", tmp_path / "r.jsonl", LoadProfile())


def test_parse_mix():
    assert parse_mix("infer=8,completion=1,stream=1") == {"infer": 8, "completion": 1, "stream": 1}
    assert parse_mix(" stream=2 ") == {"stream": 2}


# --------------------------------------------------------------------------- records, without locust
def rec(start: float, **kw) -> RequestRecord:
    base = dict(start=start, wall=1.0e9 + start, latency_s=0.01, kind="infer", status=200, ok=True, worker="h:1")
    return RequestRecord(**{**base, **kw})


def test_read_log_skips_a_truncated_last_line_only(tmp_path):
    p = tmp_path / "log.jsonl"
    a, b = rec(1.0), rec(2.0, ok=False, status=0, error="ConnectionResetError")
    p.write_text(a.to_json() + "\n" + b.to_json() + "\n" + b.to_json()[:30])
    assert read_log(p) == [a, b]
    p.write_text(a.to_json() + "\n{broken\n" + b.to_json() + "\n")
    with pytest.raises(ValueError):
        read_log(p)


def test_tail_keeps_a_partial_line_for_the_next_call(tmp_path):
    prefix = tmp_path / "requests.jsonl"
    tail = RequestLogTail(prefix)
    assert tail() == []
    one, two = Path(f"{prefix}.h-1.part"), Path(f"{prefix}.h-2.part")
    line = rec(1.0).to_json() + "\n"
    with open(one, "a") as fh:
        fh.write(line + line[:25])
    assert tail() == [rec(1.0)]
    with open(one, "a") as fh:
        fh.write(line[25:])
    two.write_text(rec(0.5, worker="h:2").to_json() + "\n")
    assert tail() == [rec(0.5, worker="h:2"), rec(1.0)]
    assert tail() == []


def test_body_checks():
    assert check_infer_body(GOOD_INFER) is None
    assert check_infer_body(b"") == "empty body"
    assert check_infer_body(GOOD_INFER[:-5]) is not None
    assert check_infer_body(b'{"outputs":[{"data":["a",1,1,1,1,1,1,1]}]}') is not None
    assert check_completion_body(GOOD_COMPLETION) is None
    assert check_completion_body(b'{"choices":[]}') is not None
    s = SSEScanner()
    s.feed(sse("a")[:10])
    assert s.chunks == 0
    assert s.feed(sse("a")[10:] + sse("b")) == 2
    s.feed(b"data: [DONE]\n\n")
    assert s.verdict() is None
    s2 = SSEScanner()
    s2.feed(b'data: {"error": "replica draining"}\n\n')
    assert s2.verdict() == "stream error: replica draining"
