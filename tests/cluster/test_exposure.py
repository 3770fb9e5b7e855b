"""Exposure closed (issue 24): what a stranger on the network, or in the operator's browser,
can no longer do to the load or through the configuration.

- A rogue locust master (anything the workers' Service selects) cannot move a worker's load
  to another host, make it send a header (a token from its Secret) its own allowlist does not
  name, or reset its user class (host, proxy); it can only say so in the worker's log, once.
- A rogue worker cannot write into the verdict: what it sends that is not a well-formed
  record of its own is dropped, counted and named.
- locust's web UI serves loopback only, unless `--web-login` puts a login page in front; it
  refuses cross-origin POSTs and foreign Host headers; its swarm form cannot move the load.
- Every value written into haproxy.cfg is checked: a --ready-path with a newline is exit 2
  with one line, before any haproxy.cfg exists.
- A report's copy of the ledger leaves out the connections (kubeconfig path, context, cluster).

Real processes throughout: locust masters and workers over TCP, HTTP servers that record what
they were sent, a raw TCP decoy that counts every connection whatever its protocol.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from inferchaos.ground.errors import UsageError
from inferchaos.faults.ledger import Ledger, UndoStep
from inferchaos.load import runner as runner_mod
from inferchaos.load.records import RequestRecord, read_log
from inferchaos.load.relay import Inbox, record_from_wire
from inferchaos.load.runner import LOCUSTFILE, LoadProfile, LoadRunner, check_web, free_port, is_loopback
from inferchaos.load.workload import allowed_headers, header_allowlist, reference
from inferchaos.reports import artifacts
from inferchaos.targets.local import haproxy
from inferchaos.targets.local.spec import ClusterSpec
from tests.support.aioapp import ThreadedApp
from tests.support.faultcases import repo_env
from tests.support.cli import inferchaos, one_line
from inferchaos.ground.procs import group_members
from tests.support.loadrun import collect
from tests.support.waiting import wait_for
from tests.support.inner import PYTEST

REPO = Path(__file__).resolve().parents[2]
HOST = socket.gethostname()
ANSWER = json.dumps({"outputs": [{"name": "p", "shape": [1, 8], "datatype": "FP32", "data": [0.125] * 8}]}).encode()
WORKER_SECRET, OTHER_SECRET = "worker-secret-a1b2c3", "other-secret-d4e5f6"
NEWLINE_PATH = "/v2/health/ready\n  stats admin if TRUE"


# --------------------------------------------------------------------------- servers
class Recorder(ThreadedApp):
    """The target: answers infer, and keeps the headers of every request it was sent."""

    shutdown_timeout_s = 0.1

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[dict[str, str]] = []

    async def any(self, request: web.Request) -> web.Response:
        await request.read()
        self.requests.append({k.lower(): v for k, v in request.headers.items()} | {":path": request.path})
        if request.method == "POST" and request.path.endswith("/infer"):
            return web.Response(body=ANSWER, content_type="application/json")
        return web.Response(status=404)

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self.any)


class Decoy:
    """Where a rogue wants the load (and the tokens) to go: a raw TCP listener that counts
    every connection and keeps its first bytes, whether HTTP, a proxy CONNECT or anything."""

    def __init__(self) -> None:
        seen = self.seen = []

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.settimeout(2)
                try:
                    seen.append(self.request.recv(65536))
                except OSError:
                    seen.append(b"")
                try:
                    self.request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                         b"Connection: close\r\n\r\n")
                except OSError:
                    pass

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Decoy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def bare_env(**extra: str) -> dict[str, str]:
    """A worker pod's environment: none of the runner's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INFERCHAOS_", "LOCUST_"))}
    return env | {"PYTHONUNBUFFERED": "1"} | extra


def honest_master(port: int, tmp: Path, host: str) -> subprocess.Popen:
    """A master on loopback that waits for one worker and names `host` as the target."""
    return subprocess.Popen([sys.executable, "-P", "-m", "locust", "-f", str(LOCUSTFILE), "--master",
                             "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port), "--headless",
                             "-u", "1", "-r", "1", "--expect-workers", "1", "--host", host],
                            env=bare_env(), cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def worker_proc(port: int, tmp: Path, env: dict[str, str], *args: str, name: str = "worker",
                locustfile: str = str(LOCUSTFILE)) -> subprocess.Popen:
    log = open(tmp / f"{name}.log", "wb")
    return subprocess.Popen([sys.executable, "-P", "-m", "locust", "-f", locustfile, "--worker",
                             "--master-host", "127.0.0.1", "--master-port", str(port), *args],
                            env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


def infer_profile(rate: float = 20.0, headers: tuple[tuple[str, str], ...] = ()) -> LoadProfile:
    workload = dataclasses.replace(reference(mix="infer=1"), headers=headers)
    return LoadProfile(rate=rate, processes=1, arrival="constant", workload=workload)


ROGUE_MASTER = '''
"""Loaded beside the real locustfile by a master that wants the workers elsewhere: it
sends locust's own "update_user_class" (host, proxy, default headers) to its workers."""
import os
import gevent
from locust import events
from locust.runners import MasterRunner

DECOY_PORT = int(os.environ["ROGUE_DECOY_PORT"])


def _push(environment):
    for name in ("ArrivalUser", "InferenceUser"):
        environment.runner.send_message("update_user_class", {
            "user_class_name": name, "host": f"http://127.0.0.1:{DECOY_PORT}", "proxy_host": "127.0.0.1",
            "proxy_port": DECOY_PORT, "default_headers": {"X-Rogue": "1"}})


@events.test_start.add_listener
def _on_start(environment, **_kw):
    if isinstance(environment.runner, MasterRunner):
        _push(environment)
        gevent.spawn_later(1.0, _push, environment)
'''


# --------------------------------------------------------------------------- a rogue master
@pytest.mark.cluster
def test_a_rogue_master_cannot_move_a_worker_or_take_its_tokens(tmp_path, monkeypatch):
    """The master names another host, asks for a header from a variable the worker's
    allowlist does not name, and pushes a user-class update with a proxy: the worker's load
    all goes to its own --host with only its allowed header; the decoy sees no connection."""
    port = free_port()
    rogue = tmp_path / "rogue_master.py"
    rogue.write_text(ROGUE_MASTER)
    with Recorder() as own, Decoy() as decoy:
        worker = worker_proc(port, tmp_path, bare_env(INFERCHAOS_HEADERS="Authorization=WORKER_TOKEN",
                                                      WORKER_TOKEN=WORKER_SECRET, OTHER_SECRET=OTHER_SECRET),
                             "--host", own.url)
        try:
            # the rogue: a master aimed at the decoy, whose workload names two headers
            monkeypatch.setattr(runner_mod, "LOCUSTFILE", f"{LOCUSTFILE},{rogue}")
            profile = infer_profile(20.0, (("Authorization", "WORKER_TOKEN"), ("X-Steal", "OTHER_SECRET"),
                                           ("Authorization", "OTHER_SECRET")))
            load = LoadRunner(decoy.url, tmp_path / "requests.jsonl", profile, master=f"127.0.0.1:{port}",
                              env={"ROGUE_DECOY_PORT": str(decoy.port)})
            try:
                load.start()
                collect(load, lambda rs: len(rs) >= 40, 40)
                records = load.stop()
            finally:
                load.stop()
            worker.wait(30)
        finally:
            end(worker)
        sent_to_own = [r for r in own.requests if r[":path"].endswith("/infer")]
        decoy_seen = list(decoy.seen)
    log = (tmp_path / "worker.log").read_text()
    assert decoy_seen == [], f"the decoy got {len(decoy_seen)} connection(s): {decoy_seen[:1]!r}"
    assert len(sent_to_own) >= 40 and len(records) >= 40
    assert {r.worker for r in records} == {f"{HOST}:{worker.pid}"}
    # only the header the worker allows, with its own secret; the other secret went nowhere
    assert all(r.get("authorization") == WORKER_SECRET for r in sent_to_own), sent_to_own[0]
    assert not any("x-steal" in r or "x-rogue" in r for r in own.requests)
    assert not any(OTHER_SECRET in v for r in own.requests for v in r.values())
    # each refusal said once, however often the master repeats itself
    assert log.count("ignoring host") == 1, log[-3000:]
    assert log.count("ignoring header 'X-Steal'") == 1 and log.count("(from variable 'OTHER_SECRET')") == 2, log[-3000:]
    assert log.count("refusing a change of user class 'ArrivalUser'") == 1, log[-3000:]
    assert group_members(load.pgid) == []


@pytest.mark.cluster
def test_a_worker_without_a_target_of_its_own_refuses_to_start(tmp_path):
    """A worker pod without --host (or LOCUST_HOST) would have taken the master's: it exits 2
    with one line when a master answers, before any request."""
    port = free_port()
    with Decoy() as decoy:
        master = honest_master(port, tmp_path, decoy.url)
        try:
            worker = worker_proc(port, tmp_path, bare_env())
            try:
                rc = worker.wait(60)
            finally:
                end(worker)
        finally:
            end(master)
        seen = list(decoy.seen)
    log = (tmp_path / "worker.log").read_text()
    assert rc == 2, log[-2000:]
    assert "inferchaos: error: this load worker has no target of its own: give it --host URL" in log
    assert seen == []


@pytest.mark.cluster
def test_a_bad_header_allowlist_stops_the_worker(tmp_path):
    port = free_port()
    with Decoy() as decoy:
        master = honest_master(port, tmp_path, decoy.url)
        try:
            worker = worker_proc(port, tmp_path, bare_env(INFERCHAOS_HEADERS="Authorization"), "--host", decoy.url)
            try:
                rc = worker.wait(60)
            finally:
                end(worker)
        finally:
            end(master)
        seen = list(decoy.seen)
    log = (tmp_path / "worker.log").read_text()
    assert rc == 2 and "INFERCHAOS_HEADERS: 'Authorization' is not NAME=ENV_VAR" in log, log[-2000:]
    assert seen == []


def test_the_allowlist_keeps_only_the_pairs_it_names():
    allow = header_allowlist("Authorization=WORKER_TOKEN, x-api-key=API_KEY")
    w = dataclasses.replace(reference(), headers=(("authorization", "WORKER_TOKEN"), ("Authorization", "OTHER"),
                                                  ("X-Steal", "WORKER_TOKEN"), ("X-Api-Key", "API_KEY")))
    kept, dropped = allowed_headers(w, allow)
    assert kept.headers == (("authorization", "WORKER_TOKEN"), ("X-Api-Key", "API_KEY"))
    assert dropped == [("Authorization", "OTHER"), ("X-Steal", "WORKER_TOKEN")]
    assert allowed_headers(w, frozenset())[0].headers == ()
    for bad in ("Authorization", "Auth orization=X", "A=1X", "A=X;Y", "=X"):
        with pytest.raises(ValueError):
            header_allowlist(bad)


# --------------------------------------------------------------------------- a rogue worker
ROGUE_WORKER = '''
"""Loaded beside the real locustfile by a worker that forges records for the verdict."""
import gevent
from locust import events
from locust.runners import WorkerRunner
from inferchaos.load.records import worker_id

GOOD = dict(start=1.0, wall=2.0, latency_s=0.01, kind="infer", status=200, ok=True, error=None, replica="forged",
            ttft_s=None, feature_version=None, feature_age_s=None, worker="", prediction=0.5, lag_s=0.0,
            tokens=None, itl_ms=None, incomplete=False, prompt=None, text_sha=None)


def _forge(environment):
    me = worker_id()
    forged = [
        GOOD | {"worker": me, "start": "1.0"},            # a number as text (float() would take it)
        GOOD | {"worker": me, "kind": "evil"},            # no such kind
        GOOD | {"worker": me, "latency_s": -5.0},         # a negative latency
        GOOD | {"worker": me, "extra": 1},                # a field records do not have
        GOOD | {"worker": "victim-host:1"},               # another worker's name
        GOOD | {"worker": me, "status": 500},             # ok with a 500
    ]
    environment.runner.send_message("inferchaos_records", {"worker": me, "boot": "", "mono": 1.0, "sent": 0,
                                                           "records": forged, "in_flight": []})
    environment.runner.send_message("inferchaos_records", {"worker": me, "records": "not a list"})


@events.test_start.add_listener
def _on_start(environment, **_kw):
    if isinstance(environment.runner, WorkerRunner):
        gevent.spawn_later(1.0, _forge, environment)
'''


@pytest.mark.cluster
def test_a_rogue_worker_cannot_write_into_the_request_log(tmp_path):
    port = free_port()
    rogue = tmp_path / "rogue_worker.py"
    rogue.write_text(ROGUE_WORKER)
    with Recorder() as own:
        worker = worker_proc(port, tmp_path, bare_env(), "--host", own.url, locustfile=f"{LOCUSTFILE},{rogue}")
        try:
            load = LoadRunner(own.url, tmp_path / "requests.jsonl", infer_profile(20.0), master=f"127.0.0.1:{port}")
            try:
                load.start()
                collect(load, lambda rs: len(rs) >= 40, 40)
                wait_for(lambda: b"dropped malformed data" in load._this_log(), 20, "the master to drop the forgery")
                records = load.stop()
            finally:
                load.stop()
            worker.wait(30)
        finally:
            end(worker)
    name = f"{HOST}:{worker.pid}"
    assert len(records) >= 40 and {r.worker for r in records} == {name}
    assert not any(r.replica == "forged" for r in read_log(tmp_path / "requests.jsonl"))
    assert load._this_log().decode().count("dropped malformed data") == 1
    (lost,) = load.lost_workers()
    assert lost.worker == name and "7 malformed" in lost.reason, lost  # 6 records and one message


def test_the_inbox_takes_only_well_formed_records_of_the_sender():
    got, said = [], []
    inbox = Inbox(got.append, said.append)
    good = RequestRecord(start=5.0, wall=6.0, latency_s=0.1, kind="infer", status=200, ok=True, worker="h:1").to_dict()
    batch = {"worker": "h:1", "boot": "", "mono": 1.0, "sent": 3, "in_flight": [],
             "records": [good, good | {"ttft_s": float("nan")}, good | {"ok": 1}]}
    inbox.on_records("c1", batch, now=10.0)
    assert len(got) == 1 and inbox.tallies["c1"].rejected == 2 and len(said) == 1
    for bad in (None, [], {"worker": "h:1"}, batch | {"mono": "1"}, batch | {"worker": "h:2"},
                batch | {"worker": "evil\nname:1"}, batch | {"in_flight": ["x"]}, batch | {"sent": -1},
                batch | {"records": [good] * 10_001}, batch | {"more": 1}):
        inbox.on_records("c1", bad, now=11.0)
    inbox.on_done("c1", {"worker": "h:2", "sent": 3})  # not the name this connection gave
    assert len(got) == 1 and len(said) == 1 and not inbox.tallies["c1"].done
    inbox.on_done("c1", {"worker": "h:1", "sent": 3})
    (lost,) = inbox.lost()
    assert lost.worker == "h:1" and "malformed" in lost.reason
    with pytest.raises(ValueError):
        record_from_wire(good | {"worker": "h:1", "error": "x" * 5000}, "h:1")
    assert record_from_wire(good, "h:1") == RequestRecord.from_dict(good)


# --------------------------------------------------------------------------- the web UI
@pytest.mark.parametrize("web", ["0.0.0.0:8089", "[::]:8089", "myhost.example:8089", "10.1.2.3:8089"])
def test_load_web_off_loopback_without_login_is_refused_before_anything_starts(web, tmp_path):
    res = inferchaos("load", "http://127.0.0.1:9", "--web", web, "--ledger", str(tmp_path / "l.jsonl"))
    line = one_line(res.stderr)
    assert res.returncode == 2 and f"--web {web}" in line and "--web-login" in line, res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "l.jsonl").exists()
    with pytest.raises(UsageError, match="--web-login"):
        LoadRunner("http://127.0.0.1:9", tmp_path / "r.jsonl", LoadProfile(), web=web)
    check_web(web, login=True)  # with the login page it may


def test_web_login_needs_web_and_a_long_password(tmp_path):
    res = inferchaos("load", "http://127.0.0.1:9", "--web-login", "--ledger", str(tmp_path / "l.jsonl"))
    assert res.returncode == 2 and "--web-login goes with --web" in one_line(res.stderr)
    env = os.environ | {"INFERCHAOS_WEB_PASSWORD": "short"}
    res = inferchaos("load", "http://127.0.0.1:9", "--web", "0.0.0.0:8089", "--web-login", "--ledger",
                     str(tmp_path / "l.jsonl"), env=env)
    assert res.returncode == 2 and "shorter than 12" in one_line(res.stderr)
    assert not (tmp_path / "l.jsonl").exists()


def test_loopback_means_loopback():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.5.0.1", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "[::]", "10.0.0.1", "localhost.evil.example", "*", ""))


def _start_ui(tmp_path: Path, url: str, **kw) -> tuple[LoadRunner, str]:
    port = free_port()
    load = LoadRunner(url, tmp_path / "requests.jsonl", infer_profile(10.0), web=f"127.0.0.1:{port}", **kw)
    load.start()
    return load, f"http://127.0.0.1:{port}"


SWARM = {"user_count": "2", "spawn_rate": "10"}


@pytest.mark.cluster
def test_the_ui_refuses_other_origins_and_hosts_and_its_form_cannot_move_the_load(tmp_path):
    with Recorder() as own, Decoy() as decoy:
        load, ui = _start_ui(tmp_path, own.url)
        try:
            with httpx.Client(base_url=ui, timeout=10) as http:
                wait_for(lambda: http.get("/").status_code == 200, 20, "the UI")
                # a page in the operator's browser posting the form: refused
                assert http.post("/swarm", data=SWARM | {"host": decoy.url},
                                 headers={"Origin": "http://evil.example"}).status_code == 403
                # DNS rebinding: the browser thinks it talks to evil.example
                assert http.get("/", headers={"Host": f"evil.example:{ui.rsplit(':', 1)[1]}"}).status_code == 403
                # the UI's own form (same origin) may resize the load, never move it
                r = http.post("/swarm", data=SWARM | {"host": decoy.url}, headers={"Origin": ui})
                assert r.status_code == 200 and r.json()["success"], r.text
                before = len(own.requests)
                wait_for(lambda: len(own.requests) >= before + 30, 30, "more load at the own host")
                assert http.post("/user", json={"user_class_name": "ArrivalUser", "host": decoy.url},
                                 headers={"Origin": ui}).status_code == 201
            load.stop()
        finally:
            load.stop()
        seen = list(decoy.seen)
    text = load._this_log().decode()
    assert seen == [], seen[:1]
    assert text.count("ignoring host") == 1 and "refusing a change of user class" in text, text[-2000:]
    assert group_members(load.pgid) == []


@pytest.mark.cluster
def test_web_login_puts_locusts_login_page_in_front(tmp_path):
    password = "correct-horse-battery-staple"
    with Recorder() as own:
        load, ui = _start_ui(tmp_path, own.url, web_login=True, web_password=password)
        try:
            assert "--web-login" in load.command() and password not in " ".join(load.command())
            with httpx.Client(base_url=ui, timeout=10) as http:
                wait_for(lambda: http.get("/login").status_code == 200, 20, "the login page")
                # nothing but the login page without it
                assert http.get("/").status_code == 302 and "/login" in http.get("/").headers["location"]
                assert http.post("/swarm", data=SWARM).status_code == 302
                assert http.get("/stats/requests").status_code == 302
                wrong = http.post("/inferchaos-login", data={"username": "inferchaos", "password": "guess"})
                assert wrong.status_code == 302 and "/login" in wrong.headers["location"]
                assert http.get("/").status_code == 302
                right = http.post("/inferchaos-login", data={"username": "inferchaos", "password": password})
                assert right.status_code == 302 and "/login" not in right.headers["location"]
                cookie = right.headers.get("set-cookie", "")
                assert "HttpOnly" in cookie and "SameSite=Strict" in cookie, cookie
                assert http.get("/").status_code == 200
                assert http.get("/stats/requests").status_code == 200
            load.stop()
        finally:
            load.stop()
    assert group_members(load.pgid) == []


def test_a_generated_password_is_long_and_only_in_the_environment(tmp_path):
    load = LoadRunner("http://127.0.0.1:9", tmp_path / "r.jsonl", LoadProfile(), web="0.0.0.0:8089", web_login=True)
    assert load.web_password and len(load.web_password) >= 20
    assert load.environment()[runner_mod.WEB_PASSWORD_ENV] == load.web_password
    assert load.web_password not in " ".join(load.command())
    assert runner_mod.WEB_PASSWORD_ENV not in LoadRunner("http://127.0.0.1:9", tmp_path / "r.jsonl",
                                                         LoadProfile()).environment()


# --------------------------------------------------------------------------- haproxy.cfg
@pytest.mark.parametrize("path", [NEWLINE_PATH, "/ready\r", "/a b", "/a\tb", '/a"b', "/a'b", "/a#b", "/a\\b",
                                  "/$HOME", "ready", "", "/%zz", "/" + "a" * 2000, None, 7])
def test_a_bad_ready_path_is_refused_by_the_spec_and_the_renderer(path, tmp_path):
    with pytest.raises(UsageError) as err:
        ClusterSpec(ready_path=path).validate()
    assert "\n" not in str(err.value) and "--ready-path" in str(err.value)
    with pytest.raises(UsageError):
        haproxy.render_config(8000, 8001, tmp_path / "s.sock", 4, path, 8002)


@pytest.mark.parametrize("kw", [{"lb_port": -1}, {"lb_port": 65536}, {"lb_port": "80"}, {"lb_port": True},
                                {"slots": 0}, {"slots": "16"}, {"slots": 10**6}])
def test_bad_ports_and_slots_are_refused(kw):
    with pytest.raises(UsageError):
        ClusterSpec(**kw).validate()


@pytest.mark.parametrize("args", [
    dict(lb_port=0), dict(lb_port=70000), dict(stats_port="8001"), dict(plain_port=None),
    dict(socket_path=Path("/tmp/a dir/h.sock")), dict(socket_path=Path("/tmp/a\nb/h.sock")),
    dict(socket_path=Path("relative.sock")), dict(socket_path=Path("/tmp/" + "d" * 120 + "/h.sock")),
    dict(slots=0), dict(slots=True),
])
def test_every_value_the_renderer_writes_is_checked(args, tmp_path):
    given = dict(lb_port=8000, stats_port=8001, socket_path=tmp_path / "s.sock", slots=4, ready_path="/ready",
                 plain_port=8002) | args
    with pytest.raises(UsageError):
        haproxy.render_config(**given)
    for bad in ("0.0.0.0", "10.0.0.1", "localhost", "127.0.0.1\n"):
        with pytest.raises(UsageError):
            haproxy.check_loopback(bad)
    for bad in ("r 1", "r\n", "1r", ""):
        with pytest.raises(UsageError):
            haproxy.check_name(bad)


@pytest.mark.skipif(not __import__("shutil").which("haproxy"), reason="HAProxy not installed")
def test_a_good_unusual_ready_path_still_passes_haproxy_check(tmp_path):
    cfg = tmp_path / "h.cfg"
    cfg.write_text(haproxy.render_config(free_port(), free_port(), tmp_path / "s.sock", 16,
                                         "/v2/models/iris-v1.2/ready?verbose=0&x=%2F", free_port()))
    haproxy.check_config(haproxy.find_haproxy(), cfg)
    assert "uri /v2/models/iris-v1.2/ready?verbose=0&x=%2F\n" in cfg.read_text()


def test_up_with_a_newline_in_the_ready_path_exits_2_and_writes_no_config(tmp_path):
    state = tmp_path / "state"
    res = inferchaos("up", "--state-dir", str(state), "--ready-path", NEWLINE_PATH, "--detach")
    line = one_line(res.stderr)
    assert res.returncode == 2 and line.startswith("inferchaos: error: --ready-path") and "line breaks" in line
    assert not state.exists() and list(tmp_path.rglob("haproxy.cfg")) == []


@pytest.mark.cluster
def test_an_experiment_with_a_newline_in_the_ready_path_exits_2_and_writes_no_config(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    argv = [*PYTEST, "experiments/test_replica_crash.py", "--ledger", str(tmp_path / "ledger.jsonl"),
            "--chaos-report", str(tmp_path / "report"), "--ready-path", NEWLINE_PATH]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=REPO,
                         env=repo_env() | {"TMPDIR": str(tmp)})
    out = res.stdout + res.stderr
    assert res.returncode == 2, out[-2000:]
    (line,) = [x for x in out.splitlines() if "inferchaos: error:" in x]
    assert "--ready-path" in line and "Traceback" not in out
    assert list(tmp_path.rglob("haproxy.cfg")) == [] and not (tmp_path / "ledger.jsonl").exists()


# --------------------------------------------------------------------------- the ledger in reports
KUBECONFIG = "/home/ops/.kube/staging-admin.yaml"


def kube_ledger(path: Path) -> Ledger:
    """A ledger with one Kubernetes change, as faults/kubernetes journals it."""
    conn = {"kubeconfig": KUBECONFIG, "context": "staging-admin", "cluster": "staging"}
    ledger = Ledger(path)
    ledger.applied("replica_crash", [UndoStep("kube_scale", {"conn": conn, "namespace": "ml", "deployment": "srv",
                                                             "replicas": 3}), UndoStep("end_group", {"pgid": 5})],
                   {"kind": "kubernetes", "context": "staging-admin", "namespace": "ml", "connection": conn},
                   {"replicas": "1"}, experiment="exp")
    return ledger


def test_the_reports_ledger_copy_leaves_the_connections_out(tmp_path):
    ledger = kube_ledger(tmp_path / "ledger.jsonl")
    assert KUBECONFIG in (tmp_path / "ledger.jsonl").read_text()  # the ledger keeps it: recover needs it
    out = artifacts.write_ledger_json(artifacts.experiment_entries(ledger, "exp", 0.0), tmp_path / "ledger.json")
    text = out.read_text()
    assert KUBECONFIG not in text and "staging-admin.yaml" not in text and '"cluster": "staging"' not in text
    (copy,) = json.loads(text)
    assert copy["target"]["connection"] == artifacts.REDACTED
    assert copy["undo"][0]["args"]["conn"] == artifacts.REDACTED
    # everything else as the ledger has it
    assert copy["target"]["namespace"] == "ml" and copy["target"]["context"] == "staging-admin"
    assert copy["undo"][0]["args"]["deployment"] == "srv"
    assert copy["undo"][1] == {"op": "end_group", "args": {"pgid": 5}}
    assert copy["fault"] == "replica_crash" and copy["params"] == {"replicas": "1"}
    # a local entry (no connection anywhere) is copied as it is
    local = Ledger(tmp_path / "local.jsonl")
    entry = local.applied("replica_crash", [UndoStep("end_group", {"pgid": 5})], {"kind": "local"}, experiment="x")
    assert artifacts.shareable(entry) == json.loads(json.dumps(dataclasses.asdict(entry)))


ATTACHING = """
from pathlib import Path
from inferchaos.reports.allure_results import attach_run

def test_x():
    attach_run(Path({run!r}))
"""


def test_the_allure_attachment_of_the_ledger_carries_no_connection(tmp_path):
    """allure-pytest copies the attached file as it is (shutil.copy2): what the run directory
    holds is what lands in the Allure results, and from there in the HTML site."""
    pytest.importorskip("allure")
    ledger = kube_ledger(tmp_path / "ledger.jsonl")
    run = tmp_path / "run"
    run.mkdir()
    artifacts.write_ledger_json(artifacts.experiment_entries(ledger, "exp", 0.0), run / artifacts.LEDGER_JSON)
    (tmp_path / "test_a.py").write_text(ATTACHING.format(run=str(run)))
    subprocess.run([*PYTEST, "-q", f"--alluredir={tmp_path / 'results'}", str(tmp_path / "test_a.py")],
                   check=True, capture_output=True, timeout=120, cwd=tmp_path)
    (result,) = [json.loads(f.read_text()) for f in (tmp_path / "results").glob("*-result.json")]
    (attached,) = [a for a in result["attachments"] if a["name"] == "ledger entries"]
    copy = json.loads((tmp_path / "results" / attached["source"]).read_text())
    assert copy[0]["target"]["connection"] == artifacts.REDACTED
    assert not any(KUBECONFIG in f.read_text(errors="replace") for f in (tmp_path / "results").iterdir())
