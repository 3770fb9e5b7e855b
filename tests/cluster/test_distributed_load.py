"""Distributed load on locust's own engine: a master and worker processes over real TCP,
their records sent to the master over locust's messaging into the one request log, against
a real HTTP server that counts what it was sent. A worker SIGKILLed mid-run is named lost
with what it had sent; a worker started by hand with none of the runner's environment (a
worker pod) runs the master's settings."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from inferchaos import load_options
from inferchaos.ground.errors import UsageError
from inferchaos.load.records import part_paths, read_log
from inferchaos.load.relay import Inbox, Outbox
from inferchaos.load.runner import LOCUSTFILE, LoadProfile, LoadRunner, free_port
from inferchaos.load.workload import reference
from tests.support.faultcases import repo_env
from tests.support.leftovers import processes_mentioning
from inferchaos.ground.procs import group_members
from tests.support.loadrun import collect
from tests.support.waiting import wait_for
from tests.support.stall import StallServer
from tests.support.inner import PYTEST

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
HOST = socket.gethostname()
NOT_SENT = "not sent"


def infer_only(rate: float, processes: int) -> LoadProfile:
    return LoadProfile(rate=rate, processes=processes, arrival="constant", workload=reference(mix="infer=1"))


def scheduled_rate(records) -> float:
    """Arrivals/s by their scheduled times: what the workers together asked of the server,
    whatever the CPU let them send (constant gaps: exact, not a noisy measure)."""
    starts = sorted(r.start for r in records)
    return (len(starts) - 1) / (starts[-1] - starts[0])


def run_until(load: LoadRunner, enough, timeout_s: float = 40.0) -> None:
    collect(load, enough, timeout_s)


def test_two_workers_over_tcp_write_one_log_of_every_request_the_server_saw(tmp_path):
    log, rate = tmp_path / "requests.jsonl", 40.0
    with StallServer() as server:
        load = LoadRunner(server.url, log, infer_only(rate, 2))
        try:
            load.start()
            workers = {f"{HOST}:{pid}" for pid in load.worker_pids}
            assert len(workers) == 2 and load.pid not in load.worker_pids
            # one log: the master's part file is the only one, the workers write none
            run_until(load, lambda rs: len(rs) >= 200 and {r.worker for r in rs} == workers)
            assert [p.name for p in part_paths(log)] == [f"{log.name}.{HOST}-{load.pid}.part"]
            records = load.stop()
        finally:
            load.stop()
        arrived = server.arrived
    assert group_members(load.pgid) == [] and processes_mentioning(f"--host {server.url}") == []
    assert load.exit_code == 0
    assert part_paths(log) == [] and read_log(log) == records
    assert [r.start for r in records] == sorted(r.start for r in records)
    sent = [r for r in records if not (r.error or "").startswith(NOT_SENT)]
    assert len(sent) == arrived, f"{len(sent)} records of requests sent, the server saw {arrived}"
    per_worker = Counter(r.worker for r in records)
    assert set(per_worker) == workers, per_worker
    assert all(r.kind == "infer" for r in records)
    assert sum(r.ok for r in records) >= 0.9 * len(records)
    # each worker schedules its share, together the rate asked
    assert 0.8 * rate <= scheduled_rate(records) <= 1.2 * rate
    for w in workers:
        assert 0.8 * rate / 2 <= scheduled_rate([r for r in records if r.worker == w]) <= 1.2 * rate / 2
    assert load.lost_workers() == []


def test_a_worker_killed_mid_run_is_reported_lost_with_what_it_had_sent(tmp_path):
    log = tmp_path / "requests.jsonl"
    with StallServer() as server:
        load = LoadRunner(server.url, log, infer_only(30.0, 2))
        try:
            load.start()
            victim, survivor = load.worker_pids
            names = {victim: f"{HOST}:{victim}", survivor: f"{HOST}:{survivor}"}
            run_until(load, lambda rs: {names[victim], names[survivor]} <= {r.worker for r in rs})
            os.kill(victim, signal.SIGKILL)
            # the master's heartbeat notices (locust: 3 missed beats of 1 s); the load goes on
            wait_for(lambda: b"setting state to missing" in load._this_log(), 30, "the master to miss the worker")
            run_until(load, lambda rs: sum(r.worker == names[survivor] for r in rs) >= 10)
            t0 = time.monotonic()
            records = load.stop()
            stop_s = time.monotonic() - t0
        finally:
            load.stop()
        arrived = server.arrived
    assert group_members(load.pgid) == [], "a load process outlived the run"
    assert processes_mentioning(f"--master-port {load.master_bind[1]}") == []
    assert processes_mentioning(f"--host {server.url}") == []
    assert load.exit_code == 0 and stop_s < 15, (load.exit_code, stop_s)
    (lost,) = load.lost_workers()
    assert lost.worker == names[victim]
    from_victim = sum(r.worker == names[victim] for r in records)
    assert lost.sent == lost.received == from_victim >= 1, (lost, from_victim)
    assert "missing" in lost.reason
    assert f"inferchaos: load worker {names[victim]} lost" in load._this_log().decode()
    # everything the master got is in the log; the server saw at least that much
    assert sum(r.worker == names[survivor] for r in records) >= 10
    assert len([r for r in records if not (r.error or "").startswith(NOT_SENT)]) <= arrived


def test_the_master_publishes_what_its_workers_have_in_flight(tmp_path):
    """The safeguard sees a hang by the requests still out (a hung request writes no record):
    with workers, the master publishes theirs, from their batches."""
    with StallServer(delay_s=3.0) as server:
        load = LoadRunner(server.url, tmp_path / "requests.jsonl", infer_only(20.0, 2))
        try:
            load.start()
            tail = load.tail()
            out = wait_for(lambda: (lambda s: s if len(s) >= 20 else None)(tail.in_flight()), 30,
                             "20 requests in flight published")
            assert all(time.monotonic() - 5 < s <= time.monotonic() for s in out)
        finally:
            records = load.stop()
    assert len(records) >= 20 and load.lost_workers() == []


def test_a_worker_pod_gets_its_settings_from_the_master(tmp_path):
    """In a cluster the runner is the master (`master=HOST:PORT`) and starts no worker; the
    worker pod has none of the runner's environment: rate, workload and all come with the
    spawn message. Its target is its own (`--host`, as the pod's command line gives it): a
    worker never takes that from the master. Here the pod is a worker process started by hand
    with a bare environment."""
    port, rate = free_port(), 20.0
    bare = {k: v for k, v in os.environ.items() if not k.startswith(("INFERCHAOS_", "LOCUST_"))}
    with StallServer() as server:
        worker = subprocess.Popen([sys.executable, "-P", "-m", "locust", "-f", str(LOCUSTFILE), "--worker",
                                   "--master-host", "127.0.0.1", "--master-port", str(port), "--host", server.url],
                                  env=bare, cwd=tmp_path, stdout=open(tmp_path / "worker.log", "wb"),
                                  stderr=subprocess.STDOUT, start_new_session=True)
        try:
            load = LoadRunner(server.url, tmp_path / "requests.jsonl", infer_only(rate, 1),
                              master=f"127.0.0.1:{port}")
            try:
                load.start()
                assert load.worker_pids == []
                run_until(load, lambda rs: len(rs) >= 60)
                records = load.stop()
            finally:
                load.stop()
            worker.wait(30)  # told to quit by its master
        finally:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
    assert {r.worker for r in records} == {f"{HOST}:{worker.pid}"}
    assert all(r.kind == "infer" for r in records), Counter(r.kind for r in records)  # the master's mix
    assert 0.8 * rate <= scheduled_rate(records) <= 1.2 * rate  # the master's rate
    assert load.lost_workers() == []
    assert b"ignoring" not in (tmp_path / "worker.log").read_bytes()  # nothing refused from its own master


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("value", ["0", "abc", "-1", "1.5"])
def test_bad_load_workers_is_one_usage_error_line(value):
    options = {"--load-workers": value, "--load-arrival": "poisson", "--load-max-in-flight": "1024",
               "--api": "auto", "--header": []}
    with pytest.raises(UsageError) as err:
        load_options.settings(options.get)
    message = str(err.value)
    assert "\n" not in message and "--load-workers" in message and repr(value) in message


def test_load_workers_is_the_processes_phase_key():
    options = {"--load-workers": "3", "--load-rate": "50", "--load-arrival": "poisson",
               "--load-max-in-flight": "1024", "--api": "auto", "--header": []}
    assert load_options.settings(options.get).slo_overrides() == ["rate=50.0", "processes=3"]
    with pytest.raises(UsageError):
        LoadProfile(processes=0)


@pytest.mark.parametrize("value", ["0", "abc"])
def test_bad_load_workers_exits_2_with_one_line_before_anything_starts(value, tmp_path):
    # the plugin comes by its pytest11 entry point (the package is installed)
    argv = [*PYTEST, "experiments/test_replica_crash.py", "--ledger", str(tmp_path / "ledger.jsonl"),
            "--load-workers", value]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=REPO, env=repo_env())
    out = res.stdout + res.stderr
    assert res.returncode == 2, out[-2000:]
    (line,) = [x for x in out.splitlines() if "inferchaos: error:" in x]
    assert "--load-workers" in line and repr(value) in line, line
    assert "Traceback" not in out
    assert not (tmp_path / "ledger.jsonl").exists()


# --------------------------------------------------------------------------- the relay, bare
def test_the_relay_counts_and_names_a_worker_that_never_said_done():
    from inferchaos.load.records import RequestRecord

    got, messages = [], []
    inbox = Inbox(got.append)
    a = Outbox(lambda kind, data: messages.append(("a", kind, data)), "h:1", batch_records=2)
    b = Outbox(lambda kind, data: messages.append(("b", kind, data)), "h:2", batch_records=2)
    for box in (a, b):
        # a record names the worker that sent it (the master drops one that names another)
        rec = RequestRecord(start=1.0, wall=2.0, latency_s=0.1, kind="infer", status=200, ok=True, worker=box.worker)
        for _ in range(3):
            box.add(rec)
        box.flush([5.0])
    a.finish()
    for who, kind, data in messages:
        (inbox.on_done if kind == "inferchaos_done" else inbox.on_records)(who, data)
    assert len(got) == 6
    (lost,) = inbox.lost()
    assert (lost.worker, lost.sent, lost.received, lost.in_flight) == ("h:2", 3, 3, 1)
    assert inbox.in_flight() == [5.0]  # the lost worker's last word on what was out
    # a batch that never came: the done says more were sent than came
    inbox2 = Inbox(got.append)
    inbox2.on_done("c", {"worker": "h:3", "sent": 4})
    (short,) = inbox2.lost()
    assert short.sent == 4 and short.received == 0 and "never came" in short.reason
