"""Run locust (load/locustfile.py) in its own process group and collect its request log.

    with LoadRunner(lb_url, out / "requests.jsonl", LoadProfile(users=8)) as load:
        tail = load.tail()
        ...                       # tail() gives the records that came since the last call
    records = load.records()      # after stop(): the merged log, sorted by start

Locust is never imported here: it monkey-patches whatever process imports it.

`processes = N > 1`: locust runs as a master and N `--worker` processes in the master's
process group, connected over TCP on loopback as worker pods would be; the workers send
their records to the master over locust's messaging (load/relay.py) and the master writes
the one log. In a cluster (MASTER_ENV set) the runner starts the master only, and the
worker pods connect to it. `lost_workers()` names a worker that never said done.

Stopping: SIGINT to the whole process group, as a terminal's Ctrl-C would. In headless
mode locust turns SIGINT (KeyboardInterrupt) and SIGTERM alike into its shutdown()
(quitting event, summary, exit): each worker drains and sends its last records, the
master waits (bounded) for them. After 15 s the group gets SIGKILL.
"""

from __future__ import annotations

import ipaddress
import math
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

from inferchaos.ground.errors import UsageError
from inferchaos.ground.ports import free_port  # noqa: F401 - also this module's API
from inferchaos.ground.procs import group_members, start_time

#: the variable `targets.local.processes.marked` looks for (load/ imports nothing of targets/).
MARK_ENV = "INFERCHAOS_MARK"


from inferchaos.load.records import (
    RequestLogTail,
    RequestRecord,
    parse_mix,
    in_flight_paths,
    part_paths,
    read_log,
    read_parts,
    write_log,
)
from inferchaos.load.relay import LostWorker, read_lost, workers_path
from inferchaos.load.workload import HEADERS_ENV, WORKLOAD_ENV, Workload, reference

__all__ = ["LoadProfile", "LoadRunner", "LoadStartError", "LostWorker", "RequestLogTail", "read_log"]

#: in a cluster the runner pod is the master: with `INFERCHAOS_LOAD_MASTER=0.0.0.0:5557` the
#: experiment's load (`LoadRunner(master=...)`) binds there and starts no local workers; the
#: worker pods (deploy/base/locust.yaml) connect to it through the Service `locust-master`.
MASTER_ENV = "INFERCHAOS_LOAD_MASTER"

#: locust's web UI login (`web_login`): the password, read by the locustfile from its environment
#: (never its command line, which `ps` shows). The user name is WEB_USER.
WEB_PASSWORD_ENV = "INFERCHAOS_WEB_PASSWORD"
WEB_USER = "inferchaos"

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


class LoadStartError(RuntimeError):
    """Locust did not produce a first request record in time (or exited)."""


ARRIVALS = ("poisson", "constant")


@dataclass(frozen=True)
class LoadProfile:
    """How the load arrives. `rate` set: open loop, that many requests/s scheduled whatever
    the answers do (one arrival user per process); `rate` None: closed loop, `users` users
    each waiting for its answer. The workload (API, model, bodies) defaults to the
    reference server's; `load.workload.resolve` builds one for any other server."""

    users: int = 8
    spawn_rate: float = 50.0
    processes: int = 1
    mix: str | None = None
    model: str = "mlp"
    max_tokens: int = 8
    rate: float | None = None
    arrival: str = "poisson"
    #: open loop: requests in flight at most, per process; past it the schedule slips (and says so).
    max_in_flight: int = 1024
    workload: Workload | None = None

    def __post_init__(self) -> None:
        self.validate()

    @property
    def open_loop(self) -> bool:
        return self.rate is not None

    def describe(self) -> str:
        if self.open_loop:
            return f"open loop, {self.rate:g} req/s ({self.arrival})"
        return f"closed loop, {self.users} users"

    def resolved(self) -> Workload:
        if self.workload is not None:
            return self.workload
        return reference(self.model, self.mix, self.max_tokens)

    def validate(self) -> LoadProfile:
        if type(self.users) is not int or self.users < 1:
            raise UsageError(f"load users must be a whole number of at least 1, got {self.users!r}")
        if not isinstance(self.spawn_rate, (int, float)) or isinstance(self.spawn_rate, bool) \
                or not self.spawn_rate > 0:
            raise UsageError(f"load spawn rate must be above 0 users/s, got {self.spawn_rate!r}")
        if type(self.processes) is not int or self.processes < 1:
            raise UsageError(f"load processes must be a whole number of at least 1, got {self.processes!r}")
        if self.processes > (os.cpu_count() or 1) * 4:
            raise UsageError(f"load processes {self.processes} is more than 4 per CPU core "
                             f"({os.cpu_count()} cores)")
        if self.rate is not None and (isinstance(self.rate, bool) or not isinstance(self.rate, (int, float))
                                      or not math.isfinite(self.rate) or self.rate <= 0):
            raise UsageError(f"--load-rate must be a number of requests/s above 0, got {self.rate!r}")
        if self.arrival not in ARRIVALS:
            raise UsageError(f"--load-arrival {self.arrival!r}: expected one of {', '.join(ARRIVALS)}")
        if type(self.max_in_flight) is not int or self.max_in_flight < 1:
            raise UsageError(f"load max_in_flight must be a whole number of at least 1, got {self.max_in_flight!r}")
        if self.mix is not None:
            parse_mix(self.mix)
        if not isinstance(self.model, str) or not self.model.strip() or "/" in self.model:
            raise UsageError(f"load model must be a model name, got {self.model!r}")
        if type(self.max_tokens) is not int or self.max_tokens < 1:
            raise UsageError(f"load max_tokens must be a whole number of at least 1, got {self.max_tokens!r}")
        return self

    def scaled(self, factor: float) -> LoadProfile:
        """The same load `factor` times over (a surge on top of it: factor - 1)."""
        if self.open_loop:
            return replace(self, rate=self.rate * factor)
        return replace(self, users=max(1, round(self.users * factor)))


class LoadRunner:
    """One locust run: start() → tail() while it runs → stop() → records().

    `log_path` is the merged JSONL request log; while running, the load process (the
    master, when distributed) appends to `<log_path>.<hostname>-<pid>.part`. Locust's own
    output goes to `log_locust_to` (default `<log_path>.locust.log`). `master` ("HOST:PORT"):
    be a master there for workers started elsewhere, and start none here.
    """

    def __init__(self, host: str, log_path: Path, profile: LoadProfile,
                 log_locust_to: Path | None = None, *, record_requests: bool = True,
                 extra_args: Sequence[str] = (), env: dict[str, str] | None = None,
                 timeout_s: float = 30.0, wait_s: float = 0.0, master: str | None = None,
                 web: str | None = None, web_login: bool = False, web_password: str | None = None) -> None:
        if not isinstance(host, str) or not host.startswith(("http://", "https://")):
            raise UsageError(f"load target must be an http(s) URL, got {host!r}")
        if web is not None:
            check_web(web, web_login)
        profile.validate()
        self.host = host.rstrip("/")
        self.log_path = Path(log_path).resolve()
        self.profile = profile
        self.locust_log = Path(log_locust_to).resolve() if log_locust_to else \
            self.log_path.with_name(self.log_path.name + ".locust.log")
        self.record_requests = record_requests
        self.extra_args = tuple(extra_args)
        self.extra_env = dict(env or {})
        #: in locust's environment: what an `end_marked` undo finds it by, journalled before it starts.
        self.mark = f"locust-{uuid.uuid4().hex}"
        self.timeout_s = timeout_s
        self.wait_s = wait_s
        #: HOST:PORT for locust's web UI (a game day's `inferchaos load --web`); None: headless.
        self.web = web
        #: locust's login page in front of the UI (required off loopback): user WEB_USER, this password.
        self.web_login = bool(web and web_login)
        self.web_password = (web_password or secrets.token_urlsafe(18)) if self.web_login else None
        self._proc: subprocess.Popen | None = None
        #: the local workers (processes > 1), in the master's process group.
        self._workers: list[subprocess.Popen] = []
        self._master_port: int | None = None
        #: (host, port) to bind as a master for workers started elsewhere (worker pods), or None.
        self.external_workers = _external_master(master)
        self._log_fh = None
        self._log_start = 0
        self._stopped = False
        self._merged: list[RequestRecord] | None = None
        self.started_at: float | None = None  # monotonic, when the first record appeared
        self.stopped_at: float | None = None  # monotonic, when stop() signalled locust
        self.exit_code: int | None = None

    # ------------------------------------------------------------------ lifecycle
    def command(self) -> list[str]:
        """Locust's command line: the only process with `processes == 1`, else the master."""
        p = self.profile
        # open loop: one arrival user per process, each scheduling its share of the rate
        # (locust's dispatcher gives N users to N workers one each)
        users, spawn = (p.processes, max(p.processes, 100)) if p.open_loop else (p.users, p.spawn_rate)
        # --web: locust's UI beside the same run (--autostart runs it as --headless would)
        ui = ["--headless"]
        if self.web:
            ui = ["--autostart", "--web-host", _web_host(self.web), "--web-port", self.web.rpartition(":")[2]]
            ui += ["--web-login"] if self.web_login else []
        cmd = [sys.executable, "-P", "-m", "locust", "-f", str(LOCUSTFILE), *ui,
               "-u", str(users), "-r", str(spawn), "--host", self.host,
               "--exit-code-on-error", "0", "--only-summary", "--loglevel", "INFO"]
        if self.distributed:
            host, port = self.master_bind
            cmd += ["--master", "--expect-workers", str(p.processes), "--master-bind-host", host,
                    "--master-bind-port", str(port)]
        return cmd + list(self.extra_args) + ["ArrivalUser" if p.open_loop else "InferenceUser"]

    @property
    def distributed(self) -> bool:
        """A master and workers (else one locust process doing it all)."""
        return self.profile.processes > 1 or self.external_workers is not None

    @property
    def master_bind(self) -> tuple[str, int]:
        """Where the master listens for its workers: loopback and a port of this run's own
        (locust's default 5557 is shared by every run on the machine), or `master`'s."""
        if self.external_workers is not None:
            return self.external_workers
        return "127.0.0.1", self._master_port or 5557

    def worker_command(self) -> list[str]:
        """One local worker: it connects to the master over TCP, as a worker pod would."""
        _, port = self.master_bind
        # --host: a worker's own target; it never takes the master's (a master it connects to
        # could be anyone's). `ps`, and the sweeps that look for load by its URL, see it too.
        return [sys.executable, "-P", "-m", "locust", "-f", str(LOCUSTFILE), "--worker", "--master-host", "127.0.0.1",
                "--master-port", str(port), "--host", self.host, "--loglevel", "INFO"]

    def environment(self) -> dict[str, str]:
        # our own variables are all set here, from the profile: none leaks in from the caller's
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCUST_", "INFERCHAOS_"))}
        p = self.profile
        env.update({
            WORKLOAD_ENV: p.resolved().to_json(),
            "INFERCHAOS_TIMEOUT_S": str(self.timeout_s), "INFERCHAOS_WAIT_S": str(self.wait_s),
            "INFERCHAOS_MAX_IN_FLIGHT": str(p.max_in_flight), "PYTHONUNBUFFERED": "1",
        })
        if p.open_loop:
            env.update({"INFERCHAOS_RATE": repr(float(p.rate)), "INFERCHAOS_ARRIVAL": p.arrival,
                        "INFERCHAOS_ARRIVAL_USERS": str(p.processes)})
        if self.record_requests:
            env["INFERCHAOS_REQUEST_LOG"] = str(self.log_path)
        # the headers a local worker may send: the workload's own (a worker pod lists its own)
        env[HEADERS_ENV] = ",".join(f"{name}={var}" for name, var in p.resolved().headers)
        if self.web_password:
            env[WEB_PASSWORD_ENV] = self.web_password
        env.update(self.extra_env)
        env[MARK_ENV] = self.mark
        env["INFERCHAOS_OWNER"] = f"{os.getpid()}:{start_time(os.getpid())}"
        return env

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def pgid(self) -> int | None:
        """Locust's process group (the master's, or the only process's): every load process is in it."""
        return self._proc.pid if self._proc else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, on_spawn: Callable[[int], None] | None = None) -> LoadRunner:
        """Start locust and wait for its first record. `on_spawn(pgid)` is called as soon
        as the process group exists, before the wait: the caller's chance to journal it.
        Journal `self.mark` (an `end_marked` undo) before calling this: a crash between the
        spawn and `on_spawn` would otherwise leave locust running with no undo."""
        if self._proc is not None:
            raise RuntimeError("this LoadRunner was already started; make a new one")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.locust_log.parent.mkdir(parents=True, exist_ok=True)
        for stale in part_paths(self.log_path) + in_flight_paths(self.log_path) + [workers_path(self.log_path)]:
            stale.unlink(missing_ok=True)
        self._log_fh = open(self.locust_log, "ab")
        for attempt in range(1, 4):
            if self.distributed and self.external_workers is None:
                self._master_port = free_port()
            self._spawn()
            try:
                if on_spawn is not None:
                    on_spawn(self._proc.pid)
                self._wait_started()
                return self
            except LoadStartError as exc:
                # another run took the free port we picked before locust bound it: pick again
                if attempt < 3 and self._master_port and "Address already in use" in str(exc):
                    self._end_group()
                    continue
                self.stop()
                raise
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def _spawn(self) -> None:
        local_workers = self.profile.processes if self.distributed and self.external_workers is None else 0
        self._log_fh.write(("$ " + " ".join(self.command()) + "\n").encode())
        if local_workers:
            self._log_fh.write((f"$ {' '.join(self.worker_command())}  (x{local_workers})\n").encode())
        self._log_fh.flush()
        self._log_start = self._log_fh.tell()
        env = self.environment()
        # -P and a cwd of our own: nothing but the installed inferchaos on the load's sys.path
        popen = dict(env=env, stdin=subprocess.DEVNULL, stdout=self._log_fh, stderr=subprocess.STDOUT,
                     cwd=str(self.log_path.parent))
        # a process group of its own (not a session: a worker may only join a group of its
        # own session); a terminal's Ctrl-C goes to the foreground group, never to this one
        self._proc = subprocess.Popen(self.command(), process_group=0, **popen)
        # same process group as the master: stop(), the journalled end_group undo and
        # `inferchaos recover` end them all at once
        self._workers = [subprocess.Popen(self.worker_command(), process_group=self._proc.pid, **popen)
                         for _ in range(local_workers)]

    @property
    def worker_pids(self) -> list[int]:
        """The local worker processes' pids (processes > 1)."""
        return [w.pid for w in self._workers]

    def lost_workers(self) -> list[LostWorker]:
        """After stop(): the workers that never said done, each with the records it had
        sent and how many of them came (their later records, and what they had in flight,
        are missing from the log). [] when not distributed, or never started (a file
        left by an earlier run in the same folder is not this run's)."""
        return read_lost(self.log_path) if self._proc is not None else []

    def _wait_started(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self._started():
                self.started_at = time.monotonic()
                return
            if self._proc.poll() is not None:
                raise LoadStartError(f"locust exited with code {self._proc.returncode} before its first "
                                     f"request{self._log_tail()}")
            if time.monotonic() > deadline:
                what = "first request record" if self.record_requests else "users"
                raise LoadStartError(f"locust gave no {what} within {START_TIMEOUT_S:.0f} s{self._log_tail()}")
            time.sleep(0.05)  # polling a condition, with a deadline

    def _started(self) -> bool:
        # open loop: its arrival users are up (a first answer may never come from a hung server)
        if self.record_requests and not self.profile.open_loop:
            return any(_size(p) > 0 for p in part_paths(self.log_path))
        return self.users_started()

    def _this_log(self) -> bytes:
        try:
            with open(self.locust_log, "rb") as fh:
                fh.seek(self._log_start)
                return fh.read()
        except FileNotFoundError:
            return b""

    def users_started(self) -> bool:
        """True when locust says it has spawned all its users."""
        return b"All users spawned" in self._this_log()

    def _log_tail(self, lines: int = 15) -> str:
        text = self._this_log().decode(errors="replace").strip().splitlines()[-lines:]
        return "; locust log " + str(self.locust_log) + ":\n  " + "\n  ".join(text) if text else ""

    def tail(self) -> RequestLogTail:
        """A reader of the records written since its previous call (from all load processes)."""
        return RequestLogTail(self.log_path)

    def stop(self) -> list[RequestRecord]:
        """Stop locust (SIGINT to its group; SIGKILL after 15 s), merge the part files
        into `log_path` and return the records. Idempotent; safe in `finally`."""
        if self._stopped:
            return list(self._merged or [])
        self._stopped = True
        try:
            if self._proc is not None:
                self.stopped_at = time.monotonic()
                self._end_group()
        finally:
            if self._log_fh is not None:
                self._log_fh.close()
                self._log_fh = None
            self._merged = self._merge() if self._proc is not None else []
        return list(self._merged)

    def _end_group(self) -> None:
        proc, pgid = self._proc, self._proc.pid
        if proc.poll() is None:
            _killpg(pgid, signal.SIGINT)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
        self.exit_code = proc.poll()
        # locust's parent may be gone while forked workers linger: the group must be empty
        deadline = time.monotonic() + (STOP_TIMEOUT_S if self.exit_code is None else 2.0)
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if group_members(pgid) or proc.poll() is None:
            _killpg(pgid, signal.SIGKILL)
            proc.wait()
            for w in self._workers:
                w.wait()
            deadline = time.monotonic() + 5.0
            while group_members(pgid) and time.monotonic() < deadline:
                time.sleep(0.02)
        self.exit_code = proc.returncode
        for w in self._workers:  # reaped: no zombie of ours outlives the run
            try:
                w.wait(5.0)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()

    def _merge(self) -> list[RequestRecord]:
        if not self.record_requests:
            return []
        parts = part_paths(self.log_path)
        records = read_parts(self.log_path)
        if parts or not self.log_path.exists():
            write_log(self.log_path, records)
        else:
            records = read_log(self.log_path)
        for p in parts + in_flight_paths(self.log_path):
            p.unlink(missing_ok=True)
        return records

    def records(self) -> list[RequestRecord]:
        """The merged request log (after stop())."""
        if self._merged is not None:
            return list(self._merged)
        return read_log(self.log_path)

    def __enter__(self) -> LoadRunner:
        if self._proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:  # last resort: never leave a load generator behind
        proc = getattr(self, "_proc", None)
        if proc is not None and not getattr(self, "_stopped", True) and proc.poll() is None:
            _killpg(proc.pid, signal.SIGKILL)


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except FileNotFoundError:
        return 0


def _external_master(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"load master {value!r} ({MASTER_ENV}): expected HOST:PORT for the load master to bind, e.g. 0.0.0.0:5557")
    return host, int(port)


def _web_host(web: str) -> str:
    return web.rpartition(":")[0].removeprefix("[").removesuffix("]")


def is_loopback(host: str) -> bool:
    """`localhost`, or a literal address in 127.0.0.0/8 or ::1. Any other name may resolve
    anywhere, so it is not loopback."""
    host = host.removeprefix("[").removesuffix("]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_web(web: str, login: bool) -> None:
    """locust's UI starts, stops and resizes the load on a plain form POST: off loopback
    it needs its login page."""
    host, sep, port = web.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--web {web!r}: expected HOST:PORT, e.g. 127.0.0.1:8089")
    if not is_loopback(host) and not login:
        raise UsageError(f"--web {web}: not a loopback address, and locust's UI lets anyone who reaches it "
                         f"start, stop and resize the load: add --web-login (a login page), or serve it on "
                         f"127.0.0.1")


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
