"""Open-loop load, through a real locust process, against a tiny server that can hang.

What users feel is only measured if requests keep arriving while the server stalls, their
latency runs from when they were due, and none of them is lost: not the ones cut mid-stream,
not the ones still out when the load stops, not when the runner ignores SIGINT."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from inferchaos.load.records import RequestRecord, read_log
from inferchaos.load.runner import LoadProfile, LoadRunner
from inferchaos.load.workload import reference
from inferchaos.ground.procs import group_members
from tests.support.loadrun import collect
from tests.support.stall import StallServer

pytestmark = pytest.mark.cluster

def run_for(url: str, log: Path, profile: LoadProfile, seconds: float, **kw) -> tuple[LoadRunner, list[RequestRecord]]:
    load = LoadRunner(url, log, profile, **kw)
    try:
        load.start()
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            time.sleep(0.1)
        records = load.stop()
    finally:
        load.stop()
    assert group_members(load.pgid) == []
    return load, records


def test_open_loop_keeps_arriving_while_every_answer_takes_a_second(tmp_path):
    """Closed loop with 2 users sends 2 requests a second to a server that takes 1 s;
    open loop at 40/s sends 40 a second, each waiting its second: the log says so."""
    with StallServer(delay_s=1.0) as server:
        _, closed = run_for(server.url, tmp_path / "closed.jsonl",
                            LoadProfile(users=2, workload=reference(mix="infer=1")), 4.0)
        _, opened = run_for(server.url, tmp_path / "open.jsonl",
                            LoadProfile(rate=40.0, arrival="constant", workload=reference(mix="infer=1")), 4.0)
    assert len(closed) <= 12, len(closed)  # ~2/s for ~4 s (+ the drain)
    span = max(r.start for r in opened) - min(r.start for r in opened)
    assert 0.8 * 40 <= (len(opened) - 1) / span <= 1.2 * 40, (len(opened), span)
    assert all(r.ok and r.latency_s >= 1.0 for r in opened)
    # constant arrivals: the scheduled starts are 25 ms apart, whatever the answers did
    gaps = [b.start - a.start for a, b in zip(opened, opened[1:])]
    assert max(abs(g - 0.025) for g in gaps) < 1e-6
    assert max(r.lag_s for r in opened) < 0.5


def test_poisson_arrivals_have_exponential_gaps(tmp_path):
    with StallServer() as server:
        _, records = run_for(server.url, tmp_path / "r.jsonl",
                             LoadProfile(rate=200.0, workload=reference(mix="infer=1")), 3.0)
    gaps = sorted(b.start - a.start for a, b in zip(records, records[1:]))
    mean = sum(gaps) / len(gaps)
    assert 0.8 / 200 < mean < 1.2 / 200
    # exponential: the median gap is ln 2 of the mean, far from constant gaps' 1.0
    assert 0.55 < gaps[len(gaps) // 2] / mean < 0.85


def test_streams_cut_or_still_out_at_the_stop_are_recorded_with_their_tokens(tmp_path):
    with StallServer(stall=True) as server:
        load, records = run_for(server.url, tmp_path / "r.jsonl",
                                LoadProfile(rate=20.0, arrival="constant", workload=reference(mix="stream=1")),
                                2.0, env={"INFERCHAOS_DRAIN_S": "0.5"})
        sent = server.arrived
    assert records and len(records) >= sent  # every request the server saw is in the log
    for r in records:
        assert not r.ok and r.incomplete and r.kind == "stream", r
        assert r.error.startswith("in flight when the load stopped (cut after"), r
        assert r.tokens == 2 and r.itl_ms is not None and len(r.itl_ms) == 1, r
        assert r.ttft_s is not None and r.latency_s >= r.ttft_s
    assert read_log(load.log_path) == records


def test_a_runner_that_ignores_sigint_still_stops_its_load_cleanly(tmp_path):
    """A background job of a shell script starts with SIGINT ignored, and its children
    inherit that: locust must still stop on the runner's SIGINT, not wait for SIGKILL."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        status = subprocess.run(["cat", "/proc/self/status"], capture_output=True, text=True).stdout
        ignored = int(status.split("SigIgn:")[1].split()[0], 16)
        assert ignored & (1 << (signal.SIGINT - 1)), "the setup must hand SIGINT ignored to children"
        with StallServer() as server:
            load = LoadRunner(server.url, tmp_path / "r.jsonl", LoadProfile(rate=50.0, workload=reference(mix="infer=1")))
            try:
                load.start()
                collect(load, lambda rs: len(rs) >= 20)
                t0 = time.monotonic()
                records = load.stop()
                took = time.monotonic() - t0
            finally:
                load.stop()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert load.exit_code == 0, load.exit_code  # it shut down itself: not -9
    assert took < 5.0, took
    assert records and all(r.ok for r in records)
