"""Inference clients for locust: open-loop arrivals (default) or closed-loop users.

Run by `load.runner.LoadRunner` as `python -m locust -f load/locustfile.py ...` in its own
process; never import this module elsewhere (importing locust monkey-patches the process).

Open loop: one `ArrivalUser` per load process schedules requests at the target rate
(constant or Poisson gaps) whether or not earlier ones answered, each in its own
greenlet, up to a cap in flight. A hung replica then holds requests, not users: the
requests keep arriving and their wait shows, measured from the scheduled send time
(no coordinated omission). Closed loop (`InferenceUser`, INFERCHAOS_RATE unset) keeps
the old model: N users, each waiting for its answer before the next request.

Every request scheduled gets a record: answered, failed, cut mid-stream (`incomplete`,
with the tokens received), still in flight when the load stopped (after a drain of
INFERCHAOS_DRAIN_S), or never sent because the client fell behind.

Three roles, by locust's runner: alone (one process writes its part file); a master (runs no
user: it writes the records its workers send, load/relay.py, after checking each one, and
names the workers that never said done); a worker (sends its records to the master, and gets
the settings below from it in the spawn message, so a worker pod needs none of them).

What no one else decides (locust's channel has no authentication; its web UI starts a swarm
on a plain form POST): every process sends its load to its *own* `--host` (or LOCUST_HOST),
whatever a master's spawn message or a UI's form says; a worker without one refuses to start.
A worker sends only the headers its own INFERCHAOS_HEADERS lists (NAME=ENV_VAR pairs): any
other header a master's workload names is dropped, and said once. locust's "update user
class" (from a master or the UI's POST /user: host, proxy, headers...) is refused. Redirects
are not followed (a 3xx is a failed request): a request's headers go to its host only.
With `--web-login` the UI asks for user `inferchaos` and the password in
INFERCHAOS_WEB_PASSWORD; any UI refuses a POST from another origin, and a UI on loopback
refuses a Host header that is not its own (DNS rebinding).

Environment:
  INFERCHAOS_WORKLOAD     the resolved workload (load.workload.Workload as JSON)
  INFERCHAOS_RATE         arrivals/s of this whole run; unset or 0: closed loop
  INFERCHAOS_ARRIVAL      poisson (default) or constant
  INFERCHAOS_ARRIVAL_USERS  how many arrival users share the rate (one per process)
  INFERCHAOS_MAX_IN_FLIGHT  requests in flight per arrival user, at most (default 1024)
  INFERCHAOS_DRAIN_S      on stop, how long in-flight requests may still finish (default 5)
  INFERCHAOS_WAIT_S       closed loop: wait between a user's requests, default 0
  INFERCHAOS_TIMEOUT_S    connect and read timeout, default 30
  INFERCHAOS_REQUEST_LOG  path prefix of the request log (<prefix>.<host>-<pid>.part; the master's
                          or the lone process's)
  INFERCHAOS_HEADERS      a worker's own: the NAME=ENV_VAR header pairs it may send (comma-separated)
  INFERCHAOS_WEB_PASSWORD with --web-login: the UI's password (user `inferchaos`)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import secrets
import signal
import sys
import time
from typing import Mapping
from urllib.parse import urlsplit

import gevent
import gevent.pool
from locust import FastHttpUser, constant, events, task
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner

from inferchaos.ground.procs import start_time
from inferchaos.load.records import (
    FEATURE_AGE_HEADER,
    FEATURE_VERSION_HEADER,
    REPLICA_HEADER,
    STREAMING,
    RecordWriter,
    RequestRecord,
    SSEScanner,
    header_float,
    header_int,
    parse_completion_body,
    parse_infer_body,
    worker_id,
    write_in_flight,
)
from inferchaos.load.relay import DONE, RECORDS, Inbox, Outbox, write_summary
from inferchaos.load.workload import (HEADERS_ENV, WORKLOAD_ENV, Workload, allowed_headers, header_allowlist,
                                     reference)

STOP = "inferchaos_stop"
CONFIG_OPTION = "--inferchaos-config"


def _on_sigint() -> None:
    """The stop: KeyboardInterrupt in the main greenlet only (locust's shutdown() follows),
    as gevent hands on its system errors. Python's own handler raises it in whichever
    greenlet runs, often one mid-request: that request's greenlet died unrecorded."""
    hub = gevent.get_hub()
    hub.loop.run_callback(hub.parent.throw, KeyboardInterrupt)


# Also takes SIGINT back where it started ignored (a background job of a shell), else the
# runner's SIGINT would do nothing and every stop would wait for the SIGKILL.
gevent.signal_handler(signal.SIGINT, _on_sigint)

#: what a worker must run as its master does: sent to each worker with its spawn message (a
#: worker pod has none of the runner's environment), read from the environment everywhere
#: else. Not a header's value (`--header NAME=ENV_VAR`): a worker reads ENV_VAR from its own.
CONFIG_KEYS = (WORKLOAD_ENV, "INFERCHAOS_RATE", "INFERCHAOS_ARRIVAL", "INFERCHAOS_ARRIVAL_USERS",
               "INFERCHAOS_MAX_IN_FLIGHT", "INFERCHAOS_DRAIN_S", "INFERCHAOS_WAIT_S", "INFERCHAOS_TIMEOUT_S")
WORKLOAD: Workload = reference()
RATE = 0.0
ARRIVAL = "poisson"
ARRIVAL_USERS = MAX_IN_FLIGHT = 1
DRAIN_S = WAIT_S = TIMEOUT_S = 0.0
KINDS: list[str] = []
WEIGHTS: list[int] = []
JSON_HEADERS: dict[str, str] = {}
SSE_HEADERS: dict[str, str] = {}


#: lines said once (a rogue master repeats itself with every spawn message).
_said: set[str] = set()


def _say_once(line: str) -> None:
    if line not in _said:
        _said.add(line)
        print(f"inferchaos: {line}", flush=True)


#: this process's own target: its --host (or LOCUST_HOST), fixed at init; None before.
OWN_HOST: str | None = None
#: a worker's own list of the headers it may send; read here, never from the master.
try:
    ALLOWED_HEADERS = header_allowlist(os.environ.get(HEADERS_ENV))
    _ALLOWLIST_ERROR = ""
except ValueError as _exc:
    ALLOWED_HEADERS, _ALLOWLIST_ERROR = frozenset(), str(_exc)


def _from_master(workload: Workload) -> Workload:
    """A master's workload as a worker runs it: only the headers the worker allows."""
    kept, dropped = allowed_headers(workload, ALLOWED_HEADERS)
    for name, var in dropped:
        _say_once(f"ignoring header {name[:60]!r} (from variable {var[:60]!r}) the master asked for: this worker's "
                  f"{HEADERS_ENV} does not list {name[:60]}={var[:60]}")
    if any(not c.isprintable() or c.isspace() for c in kept.model):
        raise ValueError("the model name holds spaces or control characters")
    return kept


def _configure(env: Mapping[str, str], *, master: bool = False) -> None:
    """The run's settings from `env`: this process's environment, or (`master`) the
    settings a worker's master sent, whose headers the worker's allowlist filters."""
    global WORKLOAD, RATE, ARRIVAL, ARRIVAL_USERS, MAX_IN_FLIGHT, DRAIN_S, WAIT_S, TIMEOUT_S
    global KINDS, WEIGHTS, JSON_HEADERS, SSE_HEADERS
    # all read first, then set: a bad value from a master leaves the settings as they were
    workload = Workload.from_json(env[WORKLOAD_ENV]) if env.get(WORKLOAD_ENV) else reference()
    if master:
        workload = _from_master(workload)
    values = (float(env.get("INFERCHAOS_RATE") or 0), env.get("INFERCHAOS_ARRIVAL") or "poisson",
              max(1, int(env.get("INFERCHAOS_ARRIVAL_USERS") or 1)), int(env.get("INFERCHAOS_MAX_IN_FLIGHT") or 1024),
              float(env.get("INFERCHAOS_DRAIN_S") or 5), float(env.get("INFERCHAOS_WAIT_S") or 0),
              float(env.get("INFERCHAOS_TIMEOUT_S") or 30))
    WORKLOAD = workload
    RATE, ARRIVAL, ARRIVAL_USERS, MAX_IN_FLIGHT, DRAIN_S, WAIT_S, TIMEOUT_S = values
    KINDS = [k for k, w in WORKLOAD.mix.items() if w]
    WEIGHTS = [WORKLOAD.mix[k] for k in KINDS]
    JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json", **WORKLOAD.header_values()}
    SSE_HEADERS = {**JSON_HEADERS, "Accept": "text/event-stream"}
    for user in (globals().get("ArrivalUser"), globals().get("InferenceUser")):
        if user is not None:  # read by FastHttpUser when a user is made, i.e. after this
            user.network_timeout = user.connection_timeout = TIMEOUT_S
    if globals().get("ArrivalUser") is not None:
        ArrivalUser.concurrency = MAX_IN_FLIGHT
        InferenceUser.wait_time = constant(WAIT_S)


_configure(os.environ)
LOG_PREFIX = os.environ.get("INFERCHAOS_REQUEST_LOG") or None
#: the runner that started this load ("pid:start time"): when it is gone, so is the load.
OWNER = os.environ.get("INFERCHAOS_OWNER", "")

_writer: RecordWriter | None = RecordWriter(LOG_PREFIX) if LOG_PREFIX else None
#: a worker's records on their way to the master (None: not a worker).
_outbox: Outbox | None = None
#: the master's account of its workers' records (None: not a master).
_inbox: Inbox | None = None
_flusher: gevent.Greenlet | None = None
_finisher: gevent.Greenlet | None = None
_worker: tuple[int, str] | None = None
#: monotonic time the load was told to stop (None: running): arrivals due before it are still sent.
_stop_at: float | None = None
_closed = False


def _worker_name() -> str:
    global _worker
    pid = os.getpid()
    if _worker is None or _worker[0] != pid:
        _worker = (pid, worker_id())
    return _worker[1]


def _out_now(now: float) -> list[float]:
    """Starts of the requests of this process still out, and of the arrivals due and unsent."""
    due = [s.next for s in _schedules if s.next <= now and not _closed]
    return [f.scheduled for f in _flights.values()] + due


def _flush_forever() -> None:
    while True:
        gevent.sleep(0.2)
        now = time.monotonic()
        if _outbox is not None:
            if not _outbox.done:
                _outbox.flush(_out_now(now))
        elif _writer is not None:
            _writer.flush()
            try:
                write_in_flight(_writer.prefix, _inbox.in_flight() if _inbox is not None else _out_now(now), now)
            except OSError:
                pass  # the run's folder went away: nothing to tell


def _ensure_flusher() -> None:
    global _flusher
    if (_writer is not None or _outbox is not None) and (_flusher is None or _flusher.dead):
        _flusher = gevent.spawn(_flush_forever)


def _emit(record: RequestRecord) -> None:
    if _outbox is not None:
        _outbox.add(record)
    elif _writer is not None:
        _writer.write(record)
    else:
        return
    _ensure_flusher()


def _watch_owner(environment) -> None:
    """A dead man's switch: a runner SIGKILLed without `inferchaos recover` must not leave
    load hammering the endpoint for ever. Its pid and start time name it exactly."""
    pid_text, _, started = OWNER.partition(":")
    pid = int(pid_text)
    while True:
        gevent.sleep(1.0)
        if str(start_time(pid)) != started:
            print(f"inferchaos: the runner (pid {pid}) is gone: stopping the load", flush=True)
            if environment.runner is not None:
                environment.runner.quit()
            return


def _wall(mono: float) -> float:
    return time.time() - (time.monotonic() - mono)


# --------------------------------------------------------------------------- requests
class Flight:
    """One request from its scheduled time to its record; what the drain reports if it
    is still out when the load stops."""

    __slots__ = ("kind", "scheduled", "sent", "status", "replica", "token_times", "prompt", "reported")

    def __init__(self, kind: str, scheduled: float) -> None:
        self.kind, self.scheduled = kind, scheduled
        self.sent: float | None = None
        self.status = 0
        self.replica: str | None = None
        self.token_times: list[float] = []
        self.prompt: int | None = None
        self.reported = False

    def record(self, end: float, status: int, error: str | None, resp=None, *, incomplete: bool = False,
               prediction: float | None = None, text: str | None = None) -> RequestRecord | None:
        if self.reported:
            return None
        self.reported = True
        ok = error is None and status == 200
        if error is None and not ok:
            error = f"HTTP {status}" if status else "no response"
        times = self.token_times
        streaming = self.kind in STREAMING
        record = RequestRecord(
            start=self.scheduled, wall=_wall(self.scheduled), latency_s=end - self.scheduled, kind=self.kind,
            status=status, ok=ok, error=error, replica=_header(resp, REPLICA_HEADER) or self.replica,
            ttft_s=times[0] - self.scheduled if times else None,
            feature_version=header_int(_header(resp, FEATURE_VERSION_HEADER)),
            feature_age_s=header_float(_header(resp, FEATURE_AGE_HEADER)),
            worker=_worker_name(), prediction=prediction if ok else None,
            lag_s=max(0.0, (self.sent if self.sent is not None else end) - self.scheduled),
            tokens=len(times) if streaming else None,
            itl_ms=tuple(round((b - a) * 1000.0, 3) for a, b in zip(times, times[1:])) if len(times) > 1 else None,
            incomplete=incomplete, prompt=self.prompt,
            text_sha=hashlib.sha1(text.encode()).hexdigest()[:16] if ok and text else None,
        )
        _emit(record)
        return record


_flights: dict[int, Flight] = {}


def _register(flight: Flight) -> Flight:
    _flights[id(flight)] = flight
    return flight


def send(client, kind: str, scheduled: float, flight: Flight | None = None) -> None:
    """One request of `kind`, due at `scheduled` (monotonic), recorded whatever happens.
    `flight`: already counted as out (the arrival loop registers it when it spawns the
    greenlet, so a drain never misses a request whose greenlet has not run yet)."""
    if flight is None:
        flight = _register(Flight(kind, scheduled))
    _ensure_flusher()  # a full hang writes no record: the in-flight file must still be kept
    try:
        path, body, flight.prompt = WORKLOAD.body(kind)
        flight.sent = time.monotonic()
        if kind in STREAMING:
            _stream(client, flight, path, body)
        else:
            _unary(client, flight, path, body)
    except Exception as exc:  # noqa: BLE001 - a broken request must still be a record
        flight.record(time.monotonic(), flight.status, f"client error ({_exc_name(exc)})")
    except BaseException as exc:
        # the stop's SIGINT raises KeyboardInterrupt in whichever greenlet runs, often this
        # one mid-request (the server has it): still a record. Likewise a killed greenlet.
        end = time.monotonic()
        flight.record(end, flight.status, f"in flight when the load stopped ({type(exc).__name__} after "
                      f"{end - flight.scheduled:.1f} s)", incomplete=True)
        raise
    finally:
        _flights.pop(id(flight), None)


def _exc_name(exc: BaseException) -> str:
    name = type(exc).__name__
    code = getattr(exc, "code", None)
    if name == "BadStatusCode" or (code is not None and isinstance(code, int) and name.endswith("StatusCode")):
        return f"HTTP {code}"
    return name


def _header(resp, name: str) -> str | None:
    headers = getattr(resp, "headers", None)
    if not headers:
        return None
    try:
        return headers.get(name)
    except Exception:  # noqa: BLE001 - a broken header block must not kill the user
        return None


def _unary(client, flight: Flight, path: str, payload: bytes) -> None:
    prediction = text = None
    with client.post(path, data=payload, headers=JSON_HEADERS, name=flight.kind, catch_response=True) as resp:
        exc = resp.request_meta.get("exception")
        status = flight.status = int(resp.status_code or 0)
        if exc is not None and status == 200:
            error = f"truncated body ({_exc_name(exc)})"  # headers came, the body did not
        elif status != 200:
            error = f"HTTP {status}" if status else _exc_name(exc) if exc is not None else "no response"
        else:
            try:
                body = resp.content
            except Exception as e:  # noqa: BLE001
                body, error = None, f"truncated body ({_exc_name(e)})"
            else:
                if flight.kind == "infer":
                    error, prediction = parse_infer_body(body, WORKLOAD.output_len)
                else:
                    error, text = parse_completion_body(body, chat=flight.kind == "chat")
        if error is None:
            resp.success()
        else:
            resp.failure(error)
        flight.record(time.monotonic(), status, error, resp, prediction=prediction, text=text)


def _stream(client, flight: Flight, path: str, payload: bytes) -> None:
    nbytes = 0
    sse = SSEScanner()
    with client.post(path, data=payload, headers=SSE_HEADERS, name=flight.kind, stream=True,
                     catch_response=True) as resp:
        exc = resp.request_meta.get("exception")
        status = flight.status = int(resp.status_code or 0)
        flight.replica = _header(resp, REPLICA_HEADER)
        error: str | None = None
        if status != 200:
            error = f"HTTP {status}" if status else _exc_name(exc) if exc is not None else "no response"
        elif exc is not None:
            error = _exc_name(exc)
        else:
            try:
                # Not resp.iter_content(n): geventhttpclient's read(n) waits for n bytes, so
                # the first token would only show when n bytes (or the end) came. readline
                # returns each SSE line as soon as it is in; b"" at the end of the body.
                raw = resp._response
                while line := raw.readline(b"\n"):
                    nbytes += len(line)
                    new = sse.feed(line)
                    if new:
                        flight.token_times.extend([time.monotonic()] * new)
            except Exception as e:  # noqa: BLE001 - timeouts and resets end the stream
                error = f"{'no [DONE]' if sse.chunks else 'empty body'} ({_exc_name(e)})"
            if error is None:
                error = sse.verdict()
        end = time.monotonic()
        # locust times a stream=True request only until its headers: count the body too
        resp.request_meta["response_time"] = (end - (flight.sent or end)) * 1000.0
        resp.request_meta["response_length"] = nbytes
        if error is None:
            resp.success()
        else:
            resp.failure(error)
        flight.record(end, status, error, resp, incomplete=status == 200 and not sse.done, text=sse.text)


# --------------------------------------------------------------------------- arrivals
class Schedule:
    """Arrival times at `rate`/s from `t0`: constant gaps, or exponential ones (Poisson)."""

    def __init__(self, rate: float, t0: float, poisson: bool, seed: int | None = None) -> None:
        self.rate, self.poisson = rate, poisson
        self._rng = random.Random(seed)
        self.next = t0 + self._gap()

    def _gap(self) -> float:
        return self._rng.expovariate(self.rate) if self.poisson else 1.0 / self.rate

    def advance(self) -> float:
        due, self.next = self.next, self.next + self._gap()
        return due


_schedules: list[Schedule] = []


def _pin_host(user, environment) -> None:
    """A user's host is this process's own --host: a master's spawn message and the web UI's
    swarm form both set `environment.host` (and locust copies it onto the user class)."""
    if OWN_HOST is None:
        return  # not started by locust's main (a test): locust's own rules
    asked = environment.host or type(user).host
    if asked and asked.rstrip("/") != OWN_HOST.rstrip("/"):
        _say_once(f"ignoring host {str(asked)[:200]!r} (from the master or the web UI): this process's load "
                  f"goes to its own --host {OWN_HOST}")
    user.host = OWN_HOST


class ArrivalUser(FastHttpUser):
    """The open-loop source: requests at the schedule's times, each in its own greenlet."""

    # both weights 1: the runner names the one class to run; locust drops a class of weight
    # 0 even when named, and a worker pod learns the rate only after its classes are fixed
    weight = 1
    wait_time = constant(0)
    network_timeout = TIMEOUT_S
    connection_timeout = TIMEOUT_S
    max_retries = 0
    max_redirects = 0
    concurrency = MAX_IN_FLIGHT

    def __init__(self, environment) -> None:
        _pin_host(self, environment)
        super().__init__(environment)

    @task
    def arrive(self) -> None:
        schedule = Schedule(RATE / ARRIVAL_USERS, time.monotonic(), ARRIVAL == "poisson")
        _schedules.append(schedule)
        pool = gevent.pool.Pool(MAX_IN_FLIGHT)
        while not _closed and (_stop_at is None or schedule.next <= _stop_at):
            delay = schedule.next - time.monotonic()
            if delay > 0:
                gevent.sleep(min(delay, 0.25))
                continue
            kind = random.choices(KINDS, WEIGHTS)[0]
            pool.wait_available()  # blocks while the cap is reached
            due = schedule.advance()
            pool.spawn(send, self.client, kind, due, _register(Flight(kind, due)))
        raise StopUser()


class InferenceUser(FastHttpUser):
    """One closed-loop client: its next request waits for its last answer."""

    weight = 1
    wait_time = constant(WAIT_S)
    network_timeout = TIMEOUT_S
    connection_timeout = TIMEOUT_S
    max_retries = 0
    max_redirects = 0

    def __init__(self, environment) -> None:
        _pin_host(self, environment)
        super().__init__(environment)

    @task
    def request(self) -> None:
        if _stop_at is not None:
            raise StopUser()
        send(self.client, random.choices(KINDS, WEIGHTS)[0], time.monotonic())


# --------------------------------------------------------------------------- stopping
def drain(now: float | None = None) -> None:
    """Stop scheduling (what was due before now is still sent); let what is in flight
    finish for up to DRAIN_S; record the rest, and every arrival that was due but never
    sent because the client fell behind."""
    global _stop_at, _closed
    stop_at = _stop_at = time.monotonic() if now is None else now
    deadline = stop_at + DRAIN_S
    while (_flights or any(s.next <= stop_at for s in _schedules)) and time.monotonic() < deadline:
        gevent.sleep(0.05)
    _closed = True
    end = time.monotonic()
    for flight in list(_flights.values()):
        what = "cut" if flight.token_times else "no answer"
        flight.record(end, flight.status, f"in flight when the load stopped ({what} after "
                      f"{end - flight.scheduled:.1f} s)", incomplete=True)
    for schedule in _schedules:
        while schedule.next <= stop_at:
            Flight(random.choices(KINDS, WEIGHTS)[0], schedule.advance()).record(
                end, 0, "not sent: the client fell behind its schedule", incomplete=True)


# --------------------------------------------------------------------------- roles
@events.init.add_listener
def _on_init(environment, **_kw) -> None:
    global OWN_HOST
    if OWNER.partition(":")[0].isdigit():
        gevent.spawn(_watch_owner, environment)
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        if _ALLOWLIST_ERROR:
            _refuse(_ALLOWLIST_ERROR)
        if not environment.host:
            _refuse("this load worker has no target of its own: give it --host URL (or LOCUST_HOST); "
                    "a worker never takes its target from the master")
    OWN_HOST = environment.host or None
    environment.update_user_class = _refuse_user_class_update
    if environment.web_ui is not None:
        _guard_web_ui(environment)
    # added now, after locust's own runner listeners: `quitting` fires in reverse order, so
    # a worker drains and says done before locust tells the master it quits
    if isinstance(runner, WorkerRunner):
        _as_worker(runner)
        environment.events.quitting.add_listener(lambda **_: _finish_worker())
    elif isinstance(runner, MasterRunner):
        _as_master(environment, runner)
        environment.events.quitting.add_listener(lambda **_: _finish_master(runner))
    else:
        environment.events.quitting.add_listener(lambda **_: _finish_local())


def _refuse(line: str) -> None:
    print(f"inferchaos: error: {line}", file=sys.stderr, flush=True)
    sys.exit(2)


def _refuse_user_class_update(user_settings, *_a, **_kw) -> None:
    """locust's "update_user_class" (a master's message, the UI's POST /user) sets any
    attribute of a user class (host, proxy_host, default_headers...): refused."""
    name = user_settings.get("user_class_name") if isinstance(user_settings, dict) else None
    _say_once(f"refusing a change of user class {str(name)[:60]!r}: the load's settings come from its own "
              f"command line and environment")


def _guard_web_ui(environment) -> None:
    """locust's UI acts on plain form POSTs. Refuse a POST from another origin (a web page
    in the operator's browser), a Host that is not the UI's own when it serves loopback (DNS
    rebinding), and with --web-login put locust's login page, with one password, in front."""
    from flask import abort, redirect, request, session, url_for

    web_ui, options = environment.web_ui, environment.parsed_options
    app = web_ui.app
    app.debug = False  # locust turns Flask's debug on: no tracebacks to whoever asks
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict",
                      REMEMBER_COOKIE_HTTPONLY=True, REMEMBER_COOKIE_SAMESITE="Strict")
    port = str(options.web_port)
    loopback = {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}
    # without a login the UI is on loopback (the runner refuses it elsewhere): only its own Host
    check_host = not getattr(options, "web_login", False)

    @app.before_request
    def _same_origin():  # noqa: ANN202 - a Flask hook
        host = (request.host or "").lower()
        if check_host and host not in loopback:
            abort(403)
        origin = request.headers.get("Origin")
        if request.method not in ("GET", "HEAD", "OPTIONS") and origin is not None \
                and urlsplit(origin).netloc.lower() != host:
            abort(403)

    if not getattr(options, "web_login", False):
        return
    password = os.environ.get("INFERCHAOS_WEB_PASSWORD", "")
    if len(password) < 12:
        _refuse("--web-login needs a password of at least 12 characters in INFERCHAOS_WEB_PASSWORD")
    from flask_login import UserMixin, login_user

    class Operator(UserMixin):
        def __init__(self, name: str) -> None:
            self.id = name

    app.config["SECRET_KEY"] = secrets.token_hex(32)
    web_ui.auth_args = {"username_password_callback": "/inferchaos-login"}
    web_ui.login_manager.user_loader(lambda name: Operator(name) if name == "inferchaos" else None)

    @app.route("/inferchaos-login", methods=["POST"])
    def _login():  # noqa: ANN202 - a Flask view
        user, given = request.form.get("username", ""), request.form.get("password", "")
        if hmac.compare_digest(user.encode(), b"inferchaos") & hmac.compare_digest(given.encode(), password.encode()):
            login_user(Operator("inferchaos"))
            return redirect(url_for("locust.index"))
        session["auth_error"] = "Wrong user name or password"
        return redirect(url_for("locust.login"))


def _finish_local() -> None:
    drain()
    if _writer is not None:
        _writer.flush()


def _as_worker(runner: WorkerRunner) -> None:
    """Records go to the master, never to a file here (a worker pod's disk is not the runner's)."""
    global _outbox, _writer
    _writer = None
    _outbox = Outbox(runner.send_message, _worker_name())

    def stop(environment, msg, **_kw) -> None:
        gevent.spawn(_finish_worker)

    runner.register_message(STOP, stop)


@events.init_command_line_parser.add_listener
def _on_parser(parser, **_kw) -> None:
    parser.add_argument(CONFIG_OPTION, default="", include_in_web_ui=False,
                        help="set by the master, for its workers: the run's settings (JSON)")


@events.test_start.add_listener
def _on_test_start(environment, **_kw) -> None:
    """A worker's settings come from its master, in the first spawn message's options (a
    custom option travels there), before any user is made: a worker pod has none of the
    runner's environment."""
    config = getattr(environment.parsed_options, CONFIG_OPTION[2:].replace("-", "_"), "")
    if isinstance(environment.runner, WorkerRunner) and config:
        try:
            settings = json.loads(config)
            if not isinstance(settings, dict) or not all(isinstance(v, str) for v in settings.values()):
                raise ValueError("not an object of strings")
            _configure({k: settings[k] for k in CONFIG_KEYS if k in settings}, master=True)
        except (ValueError, TypeError, KeyError) as exc:
            _say_once(f"ignoring the master's settings: {str(exc)[:200]}")


def _finish_worker() -> None:
    """Drain, then the last batch and done; once, whoever asks first (the master's stop
    message or this process's own SIGINT), the other waits for it."""
    global _finisher
    if _finisher is None:
        _finisher = gevent.getcurrent()
        drain()
        if _outbox is not None:
            _outbox.finish()
    elif _finisher is not gevent.getcurrent():
        while _outbox is not None and not _outbox.done and not _finisher.dead:
            gevent.sleep(0.05)


def _as_master(environment, runner: MasterRunner) -> None:
    global _inbox
    _inbox = Inbox(_writer.write if _writer is not None else (lambda _r: None),
                   say=lambda line: print(line, flush=True))
    if environment.parsed_options is not None:  # sent to each worker with its spawn message
        setattr(environment.parsed_options, CONFIG_OPTION[2:].replace("-", "_"),
                json.dumps({k: os.environ[k] for k in CONFIG_KEYS if k in os.environ}))

    def connected(client_id: str, **_kw) -> None:
        _inbox.tally(client_id)

    def records(environment, msg, **_kw) -> None:
        _inbox.on_records(msg.node_id, msg.data)
        _ensure_flusher()

    def done(environment, msg, **_kw) -> None:
        _inbox.on_done(msg.node_id, msg.data)

    environment.events.worker_connect.add_listener(connected)
    runner.register_message(RECORDS, records)
    runner.register_message(DONE, done)


def _finish_master(runner: MasterRunner) -> None:
    """Tell every worker to stop, wait (bounded) for each one's done, and name the lost."""
    assert _inbox is not None
    for client in list(runner.clients.all):
        try:
            runner.send_message(STOP, None, client_id=client.id)
        except Exception:  # noqa: BLE001 - a worker gone already is what the account is for
            pass
    deadline = time.monotonic() + DRAIN_S + 5.0
    while time.monotonic() < deadline:
        waiting = _inbox.waiting(_inbox.tallies)
        # a worker the heartbeat marked missing, or that quit without its done, will not say it
        live = [c for c in waiting if c in runner.clients and runner.clients[c].state != "missing"]
        if not live:
            break
        gevent.sleep(0.05)
    reasons = {c: ("missing: no heartbeat" if runner.clients[c].state == "missing" else
                   "no done before the deadline") if c in runner.clients else "it quit without its done"
               for c in _inbox.waiting(_inbox.tallies)}
    for lost in _inbox.lost(reasons):
        print(f"inferchaos: {lost.describe()}", flush=True)
    if _writer is not None:
        _writer.flush()
        try:
            write_summary(_writer.prefix, _inbox.summary(reasons))
            write_in_flight(_writer.prefix, [], time.monotonic())
        except OSError:
            pass


@events.quit.add_listener
def _on_quit(**_kw) -> None:
    if _writer is not None:
        _writer.close()
