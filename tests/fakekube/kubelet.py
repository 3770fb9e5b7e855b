"""A fake kubelet whose containers are real processes in real Linux pid namespaces, so what a
fault does to a pod (by exec, by signal, by deleting it) has the kernel's own consequences,
not the ones our code expects. Needs root (namespaces, nsenter).

What it does, for every pod bound to one of its nodes:
- runs each container through a tiny runtime shim (`SHIM`, the containerd-shim of this fake):
  the shim unshares a pid and a mount namespace, forks the container's process as PID 1 there
  with its own /proc, waits for it and exits with its status (128 + N for a death by signal N,
  as runtimes report it). Why not `unshare --fork --kill-child`: util-linux 2.38 exits 1
  ("sigprocmask unblock failed") when its child dies of SIGKILL, so exit code 137 would be lost.
  Like `--kill-child`, the shim ties itself and the container to its parent with
  PR_SET_PDEATHSIG, so a dead test process leaves no containers behind;
- `spec.shareProcessNamespace: true`: a pause process is the namespace's PID 1 and each
  container's shim joins it (setns), so the server's pid is not 1;
- the container's command is `command + args` from its spec; without one, the default image's
  entrypoint `python -I tests/fakekube/container_server.py --host IP --port P` (+ args);
- each pod gets its own IP on the loopback network (127.100.x.y: Linux routes all of
  127.0.0.0/8 to lo), written to status.podIP once its sandbox runs and kept across container
  restarts; the default server listens there, on the container's first declared
  `containerPort` (else a free port chosen at the pod's start): `Kubelet.ip(ns, pod)`,
  `Kubelet.port(ns, pod)`. So what reaches a pod's IP in a cluster reaches it here;
- readiness: a container with an HTTP server (the default one, or a `readinessProbe.httpGet`
  with a numeric port) is probed on the pod's IP every PROBE_EVERY_S with PROBE_TIMEOUT_S; one
  success makes it ready, one failure unready (a SIGSTOPped server times out). A container
  without a probe is ready while it runs, as on a cluster;
- a container whose process exits is restarted after RESTART_BACKOFF_S (the real kubelet backs
  off 10 s doubling; short here for tests): `restartCount` + 1, `lastState.terminated` with the
  real exit code (reason "Completed" for 0, else "Error"; never "OOMKilled": no cgroup here);
- a pod given a `deletionTimestamp`: SIGTERM to each container's process from the host (an
  ancestor namespace, so PID 1 gets it too if it has a handler), SIGKILL after
  `deletionGracePeriodSeconds` but never before MIN_GRACE_S (the kubelet's floor, so a grace-0
  delete is still a SIGTERM first: not a crash), then the pod is finalized
  (`fake.finalize_pod`); a pod removed outright (force) keeps its containers until the kubelet
  notices (next sync, <= SYNC_EVERY_S), then they stop the same way;
- exec: `kubelet(e)` is an exec handler (see execs.py) answering
  `nsenter -t <container's host pid> -p -m -- argv`, so the command runs in the container's
  namespaces for real; `intercept(predicate, handler)` answers chosen commands instead (one
  that cannot run here, such as a GPU hog). A container not running is refused as the
  kubelet does: HTTP 500 `container not found ("server")` (the client's handshake fails).

Status is written straight into the store (as a kubelet's PATCH of pods/status would land;
not through HTTP, so it is not in the request log), and only when it changes.
"""

from __future__ import annotations

import http.client
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from tests.fakekube.execs import Exec, ExecAnswer, ExecRefused, Run, exit_code
from tests.fakekube.store import NotFound

POD = ("", "v1", "pods")
SERVER = Path(__file__).resolve().with_name("container_server.py")
#: the pause container, as pause.c: it sleeps, reaps the orphans it inherits as PID 1 (else the
#: shared namespace fills with zombies) and exits 0 on SIGTERM or SIGINT.
PAUSE = (sys.executable, "-I", "-c", """import os, signal, sys
def reap(*_):
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass
signal.signal(signal.SIGCHLD, reap)
for s in (signal.SIGTERM, signal.SIGINT):
    signal.signal(s, lambda *_: sys.exit(0))
while True:
    signal.pause()
""")
SYNC_EVERY_S = 0.2
PROBE_EVERY_S = 0.2
PROBE_TIMEOUT_S = 0.5
RESTART_BACKOFF_S = 0.5
MIN_GRACE_S = 2.0
DEFAULT_GRACE_S = 30.0
EXEC_TIMEOUT_S = 30.0

#: The runtime shim, run as `python -I -c SHIM JOIN_PID PARENT_PID -- argv...`. JOIN_PID 0:
#: new pid + mount namespaces with a private /proc (what `unshare --pid --fork --mount-proc`
#: does); else join that process's pid and mount namespaces (a container of a pod that shares
#: its process namespace). Stdlib and ctypes only: it must start fast and import nothing of ours.
SHIM = r'''
import ctypes, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p)
NEWNS, NEWPID, PR_SET_PDEATHSIG = 0x00020000, 0x20000000, 1
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 16384, 1 << 18

def must(rc, what):
    if rc != 0:
        sys.stderr.write("fake runtime: %s: %s\n" % (what, os.strerror(ctypes.get_errno())))
        os._exit(128)

join, parent, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[4:]
must(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")
if os.getppid() != parent:
    os._exit(128)
if join:
    for ns, flag in (("pid", NEWPID), ("mnt", NEWNS)):
        fd = os.open("/proc/%d/ns/%s" % (join, ns), os.O_RDONLY)
        must(libc.setns(fd, flag), "setns " + ns)
        os.close(fd)
else:
    must(libc.unshare(NEWPID | NEWNS), "unshare")
    must(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
pid = os.fork()
if pid == 0:
    try:
        must(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")
        if not join:
            must(libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None), "mount /proc")
        for s in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(s, signal.SIG_DFL)
        os.execvp(argv[0], argv)
    except BaseException as exc:
        sys.stderr.write("fake runtime: exec %s: %s\n" % (argv[0], exc))
    os._exit(127)
_, status = os.waitpid(pid, 0)
os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
'''


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _cmdline(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


#: pod IPs, one per pod for its life (kept across container restarts), never reused in this
#: process: addresses on the loopback network, which Linux routes whole (127.0.0.0/8), so each
#: pod's servers listen on their own IP -- as in a pod's network namespace -- and the runner
#: reaches a pod by its status.podIP and the port its EndpointSlice names, as in a cluster.
_POD_IPS = itertools.count(1)


def next_pod_ip() -> str:
    n = next(_POD_IPS)
    return f"127.100.{(n // 250) % 250}.{n % 250 + 1}"


def _probe(host: str, port: int, path: str) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=PROBE_TIMEOUT_S)
    try:
        conn.request("GET", path)
        return 200 <= conn.getresponse().status < 400
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


class _Stale(Exception):
    """The pod in the store is another one of the same name (a new uid): leave it alone."""


@dataclass
class Process:
    """One run of a container: its shim (our child) and, once it has exec'd, the container's
    process as the host sees it (what the kubelet signals and exec enters)."""

    shim: subprocess.Popen
    started_at: str = field(default_factory=_now)
    host_pid: int | None = None
    sigterm_sent: bool = False

    @classmethod
    def start(cls, argv: tuple[str, ...], join: int, log: Path) -> Process:
        with open(log, "ab") as out:
            shim = subprocess.Popen([*PAUSE[:2], "-c", SHIM, str(join), str(os.getpid()), "--", *argv],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
        return cls(shim)

    def resolve(self) -> int | None:
        """The container's host pid, once the shim's child has exec'd the container's command
        (before that its /proc may not be mounted yet, and its cmdline is the shim's)."""
        if self.host_pid is None and self.shim.poll() is None:
            mine = _cmdline(self.shim.pid)
            for child in _children(self.shim.pid):
                theirs = _cmdline(child)
                if theirs and theirs != mine:
                    self.host_pid = child
        return self.host_pid

    def poll(self) -> int | None:
        return self.shim.poll()

    def signal(self, sig: int) -> bool:
        """Signal the container's process, from the host. Only while the shim has not reaped
        it: until then its pid cannot be reused. False when it has not exec'd yet (a SIGKILL
        then goes to the shim, whose death takes its child along: PR_SET_PDEATHSIG)."""
        if self.poll() is not None:
            return True
        if self.resolve() is None:
            if sig == signal.SIGKILL:
                self.shim.kill()
            return False
        try:
            os.kill(self.host_pid, sig)  # type: ignore[arg-type]
        except ProcessLookupError:
            pass
        return True

    def kill(self) -> None:
        """SIGKILL the container's process (its namespace dies with it if it is PID 1) and
        reap the shim, which exits once it has reaped the container's process."""
        self.signal(signal.SIGKILL)
        try:
            self.shim.wait(2)
        except subprocess.TimeoutExpired:
            self.shim.kill()
            self.shim.wait(5)


@dataclass
class Container:
    """The kubelet's record of one container of a pod, across its restarts."""

    name: str
    image: str
    argv: tuple[str, ...]
    probe: tuple[str, int, str] | None  # (pod IP, port, path) of its readiness probe
    port: int | None  # the default server's port (on the pod's IP)
    log: Path
    proc: Process | None = None
    ready: bool = False
    restart_count: int = 0
    terminated: dict[str, Any] | None = None  # the current state, while exited
    last_terminated: dict[str, Any] | None = None
    restart_at: float | None = None
    runs: int = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, join: int) -> None:
        if self.proc is not None:  # a restart
            self.restart_count += 1
            self.last_terminated, self.terminated = self.terminated, None
        self.runs += 1
        self.proc, self.ready, self.restart_at = Process.start(self.argv, join, self.log), False, None

    def reap(self) -> bool:
        """Notice an exit: the state turns terminated with the real code. True if it just exited."""
        if self.proc is None or self.terminated is not None or (returncode := self.proc.poll()) is None:
            return False
        code = exit_code(returncode)  # the shim's own death (SIGKILLed) reads as 137 too
        self.ready = False
        self.terminated = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                           "startedAt": self.proc.started_at, "finishedAt": _now(),
                           "containerID": self.container_id}
        return True

    @property
    def container_id(self) -> str:
        return f"fakekube://{self.name}-{self.runs}"

    def status(self) -> dict[str, Any]:
        if self.running:
            state: dict[str, Any] = {"running": {"startedAt": self.proc.started_at}}  # type: ignore[union-attr]
        elif self.terminated is not None:
            state = {"terminated": self.terminated}
        else:
            state = {"waiting": {"reason": "ContainerCreating"}}
        out = {"name": self.name, "image": self.image, "imageID": "", "containerID": self.container_id,
               "ready": self.ready, "started": self.running, "restartCount": self.restart_count,
               "state": state, "lastState": {"terminated": self.last_terminated} if self.last_terminated else {}}
        return out


def container_of(spec: dict[str, Any], log_dir: Path, pod: str, ip: str) -> Container:
    """What runs for a container's spec: its command + args, or the default server, on the
    pod's IP and the container's first declared port (else a free one)."""
    name = spec.get("name") or "container"
    command, args = list(spec.get("command") or []), list(spec.get("args") or [])
    port = None
    if command:
        argv = tuple(command + args)
    else:
        declared = [p.get("containerPort") for p in spec.get("ports") or [] if isinstance(p.get("containerPort"), int)]
        port = declared[0] if declared else free_port()
        # -I: not the script's folder on sys.path (tests/fakekube/selectors.py would shadow the stdlib's)
        argv = (sys.executable, "-I", str(SERVER), "--host", ip, "--port", str(port), *args)
    http_get = (spec.get("readinessProbe") or {}).get("httpGet") or {}
    probe = None
    if isinstance(http_get.get("port"), int):
        probe = (ip, http_get["port"], http_get.get("path") or "/")
    elif port is not None:
        probe = (ip, port, "/ready")
    return Container(name, spec.get("image", ""), argv, probe, port, log_dir / f"{pod}_{name}.log")


class PodWorker(threading.Thread):
    """Runs one pod (one uid) from its start to its end: starts, probes, restarts and stops its
    containers and writes its status. Containers' shims are children of this very thread, so
    their PR_SET_PDEATHSIG fires only when it (or the whole process) ends."""

    def __init__(self, kubelet: Kubelet, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        super().__init__(name=f"kubelet-{meta['name']}", daemon=True)
        self.kubelet = kubelet
        self.namespace, self.pod, self.uid = meta.get("namespace", ""), meta["name"], meta["uid"]
        self.shared = bool(spec.get("shareProcessNamespace"))
        self.ip = next_pod_ip()
        self.containers = [container_of(c, kubelet.log_dir, f"{self.namespace}_{self.pod}", self.ip)
                           for c in spec.get("containers") or []]
        self.pause: Process | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._kill_now = threading.Event()
        self._deadline: float | None = None  # set once terminating: SIGKILL after it
        self._finalize = False
        self._written: Any = None
        self._started_at: str | None = None

    # --- asked by the kubelet ------------------------------------------------------------------
    def terminate(self, grace_s: float, finalize: bool) -> None:
        """Graceful stop: SIGTERM now, SIGKILL after grace_s, never under MIN_GRACE_S (the
        kubelet's floor when it stops a container, even for a grace-0 delete). A second call
        may shorten it."""
        with self._lock:
            deadline = time.monotonic() + max(MIN_GRACE_S, grace_s)
            if self._deadline is None:
                self._finalize = finalize
            self._deadline = deadline if self._deadline is None else min(self._deadline, deadline)
        self._wake.set()

    def kill_now(self) -> None:
        self._kill_now.set()
        self._wake.set()

    @property
    def terminating(self) -> bool:
        return self._deadline is not None

    def container(self, name: str) -> Container | None:
        if not name and self.containers:
            return self.containers[0]
        return next((c for c in self.containers if c.name == name), None)

    # --- the loop ------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            while not self._kill_now.is_set():
                if self._sync():
                    break
                self._write()
                self._wake.wait(PROBE_EVERY_S)
                self._wake.clear()
        finally:
            self._teardown()
            self._write()
            if self._finalize and not self._kill_now.is_set():
                self.kubelet.finalize(self.namespace, self.pod, self.uid)
            self.kubelet._done(self)

    def _sync(self) -> bool:
        """One pass; True once a terminating pod's containers have all stopped."""
        with self._lock:
            now = time.monotonic()
            if self.shared and not self.terminating and (self.pause is None or self.pause.poll() is not None):
                if self.pause is not None:  # the sandbox died: its containers died with it
                    self.pause.kill()
                self.pause = Process.start(PAUSE, 0, self.kubelet.log_dir / f"{self.namespace}_{self.pod}_pause.log")
            join = self.pause.resolve() if self.pause is not None else 0
            if self.shared and not join and not self.terminating:
                return False  # the sandbox has not started yet
            for c in self.containers:
                if c.reap():
                    c.restart_at = now + RESTART_BACKOFF_S
                if self.terminating:
                    continue
                if c.proc is None or (c.terminated is not None and now >= (c.restart_at or 0)):
                    c.start(join or 0)
            if self.terminating:
                if all(not c.running for c in self.containers):
                    return True
                late = now >= self._deadline  # type: ignore[operator]
                for c in self.containers:
                    if c.proc is None or not c.running:
                        continue
                    if late:
                        c.proc.signal(signal.SIGKILL)
                    elif not c.proc.sigterm_sent:
                        c.proc.sigterm_sent = c.proc.signal(signal.SIGTERM)
        for c in self.containers:  # probes outside the lock: a stopped server takes PROBE_TIMEOUT_S
            if c.running and c.proc is not None and c.proc.resolve() is not None:
                if self._started_at is None:
                    self._started_at = _now()
                c.ready = _probe(*c.probe) if c.probe else True
        return False

    def _teardown(self) -> None:
        for c in self.containers:
            if c.proc is not None:
                c.proc.kill()
                c.reap()
        if self.pause is not None:
            self.pause.kill()

    # --- the status ----------------------------------------------------------------------------
    def _write(self) -> None:
        statuses = [c.status() for c in self.containers]
        ready = bool(self.containers) and all(c.ready for c in self.containers)
        if self._started_at is None:
            phase = "Pending"
        elif self.terminating and not any(c.running for c in self.containers):
            phase = "Succeeded" if all((c.terminated or {}).get("exitCode") == 0 for c in self.containers) else "Failed"
        else:
            phase = "Running"
        snapshot = (phase, ready, statuses, bool(self._started_at))
        if snapshot == self._written:
            return

        def change(pod: dict[str, Any]) -> dict[str, Any]:
            if pod["metadata"].get("uid") != self.uid:
                raise _Stale
            status = pod.setdefault("status", {})
            status["phase"] = phase
            status["containerStatuses"] = statuses
            if self._started_at:  # the sandbox is up: its IP is known (the CNI's, as a kubelet reports it)
                status["podIP"], status["podIPs"] = self.ip, [{"ip": self.ip}]
            if self._started_at:
                status.setdefault("startTime", self._started_at)
            status["conditions"] = _conditions(status.get("conditions") or [], ready)
            return pod

        try:
            self.kubelet.store.update(self.kubelet.store.resource(*POD), self.namespace, self.pod, change)
        except (NotFound, _Stale):
            pass
        self._written = snapshot


def _conditions(old: list[dict[str, Any]], ready: bool) -> list[dict[str, Any]]:
    """The pod's conditions, a lastTransitionTime only where the status changed; others kept."""
    want = {"Initialized": True, "Ready": ready, "ContainersReady": ready, "PodScheduled": True}
    by_type = {c.get("type"): c for c in old}
    out = []
    for type_, value in want.items():
        status = "True" if value else "False"
        current = by_type.get(type_)
        if current is not None and current.get("status") == status:
            out.append(current)
        else:
            c = {"type": type_, "status": status, "lastTransitionTime": _now()}
            if not value:
                c["reason"] = "ContainersNotReady"
            out.append(c)
    return out + [c for c in old if c.get("type") not in want]


Predicate = Callable[[Exec], bool]
Handler = Callable[[Exec], ExecAnswer]


class Kubelet:
    """The kubelet of `nodes` (all nodes when None) of a FakeKube. Start, stop; use it as the
    FakeKube's `exec_handler`."""

    def __init__(self, fake: Any, nodes: Iterable[str] | None = None) -> None:
        self.fake, self.store = fake, fake.store
        self.nodes = set(nodes) if nodes is not None else None
        self.log_dir = Path()  # the containers' logs, made at start, removed at stop
        self._workers: dict[str, PodWorker] = {}  # by uid
        self._done_uids: set[str] = set()
        self._intercepts: list[tuple[Predicate, Handler]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-kubelet", daemon=True)
        self._unsubscribe: Callable[[], None] | None = None

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> Kubelet:
        self.log_dir = Path(tempfile.mkdtemp(prefix="fakekubelet-"))
        self._unsubscribe = self.store.subscribe(self._wake.set)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Kill every container (SIGKILL) and wait for them: nothing of the kubelet survives."""
        self._stop.set()
        self._wake.set()
        started = self._unsubscribe is not None
        if started:
            self._unsubscribe()  # type: ignore[misc]
        if self._thread.is_alive():
            self._thread.join(10)
        with self._lock:
            workers = list(self._workers.values())
        for w in workers:
            w.kill_now()
        for w in workers:
            w.join(15)
        if started:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    # --- what tests use ------------------------------------------------------------------------
    def intercept(self, predicate: Predicate, handler: Handler) -> Callable[[], None]:
        """Answer the execs `predicate` picks with `handler` (canned `(out, err, code)` or a
        `Run`) instead of running them in the container. Returns its removal."""
        entry = (predicate, handler)
        with self._lock:
            self._intercepts.append(entry)
        return lambda: self._intercepts.remove(entry) if entry in self._intercepts else None

    def worker(self, namespace: str, pod: str) -> PodWorker | None:
        with self._lock:
            found = [w for w in self._workers.values() if (w.namespace, w.pod) == (namespace, pod)]
        return next((w for w in found if not w.terminating), found[-1] if found else None)

    def port(self, namespace: str, pod: str, container: str = "") -> int | None:
        """The port of the default server of the pod's container (first one by default)."""
        w = self.worker(namespace, pod)
        c = w.container(container) if w else None
        return c.port if c else None

    def ip(self, namespace: str, pod: str) -> str | None:
        """The pod's IP, where its servers listen."""
        w = self.worker(namespace, pod)
        return w.ip if w else None

    def host_pid(self, namespace: str, pod: str, container: str = "") -> int | None:
        """The container's process as the host sees it, while it runs."""
        w = self.worker(namespace, pod)
        c = w.container(container) if w else None
        return c.proc.resolve() if c and c.running and c.proc else None

    def logs(self, namespace: str, pod: str, container: str = "") -> str:
        w = self.worker(namespace, pod)
        c = w.container(container) if w else None
        return c.log.read_text(errors="replace") if c and c.log.exists() else ""

    # --- exec ----------------------------------------------------------------------------------
    def __call__(self, e: Exec) -> ExecAnswer:
        with self._lock:
            intercepts = list(self._intercepts)
        for predicate, handler in intercepts:
            if predicate(e):
                return handler(e)
        if not e.argv:
            raise ExecRefused(400, "you must specify at least 1 command", "BadRequest")
        pod = self.store.get(self.store.resource(*POD), e.namespace, e.pod)
        spec = pod.get("spec") or {}
        names = [c.get("name") for c in spec.get("containers") or []]
        if not spec.get("nodeName"):
            raise ExecRefused(400, f"pod {e.pod} does not have a host assigned", "BadRequest")
        if not e.container and len(names) > 1:
            raise ExecRefused(400, f"a container name must be specified for pod {e.pod}, "
                                   f"choose one of: [{' '.join(names)}]", "BadRequest")
        name = e.container or (names[0] if names else "")
        if name not in names:
            raise ExecRefused(400, f"container {name} is not valid for pod {e.pod}", "BadRequest")
        pid = self.host_pid(e.namespace, e.pod, name)
        if pid is None:
            raise ExecRefused(500, f'container not found ("{name}")')
        return Run(("nsenter", "-t", str(pid), "-p", "-m", "--", *e.argv), EXEC_TIMEOUT_S)

    # --- the sync loop -------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.sync()
            except Exception as exc:  # keep the kubelet alive, as a real one is; say why
                print(f"fake kubelet: sync failed: {exc!r}", file=sys.stderr)
            self._wake.wait(SYNC_EVERY_S)

    def sync(self) -> None:
        pods, _ = self.store.list(self.store.resource(*POD), None)
        seen = set()
        for pod in pods:
            meta, spec = pod["metadata"], pod.get("spec") or {}
            node = spec.get("nodeName")
            if not node or (self.nodes is not None and node not in self.nodes):
                continue
            uid = meta["uid"]
            seen.add(uid)
            with self._lock:
                worker = self._workers.get(uid)
                done = uid in self._done_uids
            if meta.get("deletionTimestamp"):
                grace = meta.get("deletionGracePeriodSeconds")
                grace_s = float(DEFAULT_GRACE_S if grace is None else grace)
                if worker is not None:
                    worker.terminate(grace_s, finalize=True)
                elif not done:
                    with self._lock:
                        self._done_uids.add(uid)
                    self.finalize(meta.get("namespace", ""), meta["name"], uid)
                continue
            if worker is None and not done and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                worker = PodWorker(self, pod)
                with self._lock:
                    if self._stop.is_set():
                        return
                    self._workers[uid] = worker
                worker.start()
        with self._lock:
            gone = [w for uid, w in self._workers.items() if uid not in seen]
        for w in gone:  # removed outright (force): the containers run on until now
            w.terminate(MIN_GRACE_S, finalize=False)

    def finalize(self, namespace: str, name: str, uid: str) -> None:
        """The containers are gone: the API object may go (graceful deletion's last step)."""
        resource = self.store.resource(*POD)
        try:
            if self.store.get(resource, namespace, name)["metadata"].get("uid") != uid:
                return  # a new pod of the same name
            if hasattr(self.fake, "finalize_pod"):
                self.fake.finalize_pod(namespace, name)
            else:  # an API server without graceful deletion
                self.store.delete(resource, namespace, name)
        except (NotFound, ValueError):  # gone already; or not terminating (finalize_pod refuses)
            pass

    def _done(self, worker: PodWorker) -> None:
        with self._lock:
            self._workers.pop(worker.uid, None)
            self._done_uids.add(worker.uid)
