"""The server's process inside its container, found and signalled by exec -- not PID 1.

A container's PID 1 ignores every signal it installed no handler for when the signal comes
from inside its pid namespace, and SIGSTOP and SIGKILL can have none: `kill -STOP 1` by exec
exits 0 and changes nothing. So the server is found by its command line in /proc, refused
when it is PID 1 (run it under an init, or give the pod `shareProcessNamespace: true`), and
every change is read back from `/proc/PID/stat`. A stopped server resumes by itself at its
expiry: a watchdog left in the container sends SIGCONT even if the runner is gone.

Only sh and /proc are needed in the image: `kill` is sh's builtin (images without procps,
python:*-slim or vLLM's, have no /bin/kill), so every signal goes through `sh -c`.
"""

from __future__ import annotations

from dataclasses import dataclass

from inferchaos.ground.errors import FaultError, UsageError
from inferchaos.targets.kubernetes import ops
from inferchaos.targets.kubernetes.connection import Connection

#: in the listing script, so the listing never finds itself.
LIST_MARK = "inferchaos-ps"
LIST = (f": {LIST_MARK}; for d in /proc/[0-9]*; do s=$(cat $d/stat 2>/dev/null) || continue; "
        "c=$(tr '\\000' ' ' < $d/cmdline 2>/dev/null); printf '%s\\t%s\\n' \"$s\" \"$c\"; done")
WATCHDOG = "inferchaos-watchdog"
HOG = "inferchaos.faults.gpu_hog"


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    #: /proc/PID/stat's state: R running, S sleeping, T stopped, Z zombie...
    state: str
    #: start time in clock ticks after boot: with the pid, names the process for good.
    started: int
    cmdline: str


def parse(listing: str) -> list[Proc]:
    procs = []
    for line in listing.splitlines():
        stat, _, cmdline = line.partition("\t")
        head, sep, tail = stat.rpartition(")")
        fields = tail.split()
        if not sep or len(fields) < 20:
            continue
        try:
            procs.append(Proc(int(head.split(" (", 1)[0]), int(fields[1]), fields[0], int(fields[19]),
                              cmdline.strip()))
        except ValueError:
            continue
    return [p for p in procs if LIST_MARK not in p.cmdline]


def _exec(conn: Connection, namespace: str, pod: str, container: str, argv: list[str]) -> ops.ExecResult:
    result = ops.exec_in(conn, namespace, pod, container, argv)
    if not result.ok:
        raise FaultError(f"pod {pod} ({container}): {' '.join(argv)[:60]}: {result.detail} "
                         f"{(result.stderr or result.stdout).strip()[:200]}")
    return result


def listing(conn: Connection, namespace: str, pod: str, container: str) -> list[Proc]:
    return parse(_exec(conn, namespace, pod, container, ["sh", "-c", LIST]).stdout)


def server(conn: Connection, namespace: str, pod: str, container: str, pattern: str) -> Proc:
    """The outermost process whose command line holds `pattern` (a vLLM API server's engine
    subprocesses match too; stopping or killing the outermost is what the clients feel)."""
    procs = listing(conn, namespace, pod, container)
    matching = [p for p in procs if pattern in p.cmdline and WATCHDOG not in p.cmdline]
    if not matching:
        seen = "; ".join(f"{p.pid} {p.cmdline[:60]}" for p in procs[:8]) or "none"
        raise UsageError(f"pod {pod} ({container}): no process matches {pattern!r} (processes: {seen}); "
                         "give --server-process")
    pids = {p.pid for p in matching}
    top = min((p for p in matching if p.ppid not in pids), key=lambda p: p.pid)
    if top.pid == 1:
        raise UsageError(f"pod {pod} ({container}): the server ({top.cmdline[:60]}) is PID 1 of its container, "
                         "which ignores SIGSTOP and SIGKILL sent from inside it: give the pod "
                         "shareProcessNamespace: true, or run the server under an init (tini)")
    return top


def state(conn: Connection, namespace: str, pod: str, container: str, proc: Proc) -> str | None:
    """The process's state now; None when it is gone (or the pid names another process)."""
    for p in listing(conn, namespace, pod, container):
        if p.pid == proc.pid and p.started == proc.started:
            return p.state
    return None


def stop(conn: Connection, namespace: str, pod: str, container: str, proc: Proc, expires_s: int) -> None:
    """SIGSTOP, and a watchdog that resumes it after `expires_s` whatever becomes of us."""
    pid = int(proc.pid)
    # the watchdog's own streams go to /dev/null: exec ends only when every holder of its
    # stdout/stderr has closed them (containerd waits for the streams, not for the shell)
    script = (f"kill -STOP {pid} && {{ {{ : {WATCHDOG}-{pid}; sleep {int(expires_s)}; kill -CONT {pid}; }} "
              ">/dev/null 2>&1 </dev/null & }")
    _exec(conn, namespace, pod, container, ["sh", "-c", script])


def resume(conn: Connection, namespace: str, pod: str, container: str, pid: int, started: int) -> str:
    try:
        procs = listing(conn, namespace, pod, container)
    except FaultError as exc:
        if "is gone" in str(exc):
            return f"pod {pod}: gone, nothing to resume"
        raise
    watchdogs = [p.pid for p in procs if f"{WATCHDOG}-{int(pid)};" in p.cmdline]
    watchdogs += [p.pid for p in procs if p.ppid in watchdogs]
    same = any(p.pid == pid and p.started == started for p in procs)
    # the watchdogs first (their work is done: nothing of ours stays in the container)
    script = "; ".join([*(f"kill -TERM {w}" for w in watchdogs), *([f"kill -CONT {int(pid)}"] if same else [])])
    if script:
        _exec(conn, namespace, pod, container, ["sh", "-c", script])
    return f"pod {pod}: process {pid} resumed" if same else \
        f"pod {pod}: process {pid} is gone (its container restarted), nothing to resume"


def kill(conn: Connection, namespace: str, pod: str, container: str, proc: Proc) -> None:
    _exec(conn, namespace, pod, container, ["sh", "-c", f"kill -KILL {int(proc.pid)}"])


def end_hog(conn: Connection, namespace: str, pod: str, container: str) -> str:
    try:
        hogs = [p.pid for p in listing(conn, namespace, pod, container) if HOG in p.cmdline]
    except FaultError as exc:
        if "is gone" in str(exc):
            return f"pod {pod}: gone, no GPU hog left"
        raise
    if hogs:
        _exec(conn, namespace, pod, container, ["sh", "-c", "kill -TERM " + " ".join(str(int(h)) for h in hogs)])
    return f"pod {pod}: GPU hog ended ({len(hogs)} process(es))" if hogs else f"pod {pod}: no GPU hog running"
