"""Process groups the local cluster owns, and how to end them whatever state they are in.

Every process we start gets a session (and so a process group) of its own: a signal to
the group reaches whatever a replica command forked, and "nothing left running" can be
checked by asking whether the group still exists.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterable, Mapping

from inferchaos.ground.procs import boot_id, group_members, start_time, state  # noqa: F401 - also this module's API


def spawn(argv: list[str], log_path: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(env) if env is not None else None,
        )


#: the environment variable a process started under a journalled mark carries.
MARK_ENV = "INFERCHAOS_MARK"

#: what a service the cluster runs (HAProxy, Prometheus, the stores, the proxy) keeps of the
#: runner's environment: how to run, nothing else. The runner's holds the operator's
#: credentials ($KUBECONFIG, tokens, cloud keys), which these have no use for.
SERVICE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "VIRTUAL_ENV",
               "LD_LIBRARY_PATH", "XDG_CACHE_HOME", "SSL_CERT_FILE", "SSL_CERT_DIR", MARK_ENV,
               "INFERCHAOS_NATIVE_DIR")
SERVICE_ENV_PREFIXES = ("LC_", "PYTHON")

#: credentials a replica command never needs from the runner: the suite's own secrets, the
#: cluster's and the clouds'. A model hub token stays: a server fetches its weights with it.
SECRET_ENV = re.compile(r"(?i)^(KUBECONFIG|INFERCHAOS_(GRAFANA_TOKEN|WEB_PASSWORD)|(AWS|AZURE|GOOGLE|GCP|GCLOUD)_.*"
                        r"|.*(TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)(_.*)?)$")
MODEL_HUB_ENV = frozenset({"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"})


def service_env(**extra: str) -> dict[str, str]:
    """An explicit environment for a service: the allowlisted part of ours, and `extra`."""
    kept = {k: v for k, v in os.environ.items() if k in SERVICE_ENV or k.startswith(SERVICE_ENV_PREFIXES)}
    return {**kept, **extra}


def replica_env(**extra: str) -> dict[str, str]:
    """A replica's environment: ours without credentials (a `--replica-cmd` server is any
    program the operator names, with whatever settings it reads), and `extra`."""
    kept = {k: v for k, v in os.environ.items() if k in MODEL_HUB_ENV or not SECRET_ENV.match(k)}
    return {**kept, **extra}


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to a whole group; False when the group is already gone."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


def group_alive(pgid: int) -> bool:
    return bool(group_members(pgid))


def stopped(pid: int) -> bool:
    """True when a process is stopped by a signal (SIGSTOP), as a hung replica is."""
    return state(pid) in ("T", "t")


def end_groups(pgids: Iterable[int], grace_s: float = 5.0) -> list[int]:
    """SIGTERM (after SIGCONT, so stopped processes can act on it), then SIGKILL at the
    deadline. Returns the groups that were still alive and had to be killed."""
    pgids = [p for p in set(pgids) if p and p != os.getpgrp()]
    for pgid in pgids:
        signal_group(pgid, signal.SIGCONT)
        signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(group_alive(p) for p in pgids):
        time.sleep(0.05)
    killed = [p for p in pgids if group_alive(p)]
    for pgid in killed:
        signal_group(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(group_alive(p) for p in killed):
        time.sleep(0.05)
    return killed


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True



#: the only marks the suite makes: a kind, then 128 random bits. Anything else read from a
#: ledger or a state file is refused (an empty mark would match every process).
MARK = re.compile(r"[a-z][a-z0-9-]{0,40}-[0-9a-f]{32}")


def new_mark(kind: str) -> str:
    mark = f"{kind}-{uuid.uuid4().hex}"
    if not MARK.fullmatch(mark):
        raise ValueError(f"not a mark kind: {kind!r}")
    return mark


def valid_mark(mark: object) -> bool:
    return isinstance(mark, str) and MARK.fullmatch(mark) is not None


def carries_mark(pid: int, mark: str) -> bool:
    """Whether `pid` was started with `mark` in its environment (/proc/<pid>/environ is its
    environment as it was exec'd, readable only by its own user or root: a process of
    another user, or one that no longer exists, does not carry it)."""
    if not valid_mark(mark):
        return False
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
    except OSError:
        return False
    return f"{MARK_ENV}={mark}".encode() in env


def group_carries(pgid: int, mark: str) -> bool:
    """Whether a live member of group `pgid` carries `mark`: a group id is not reused while
    any member lives, so one marked member proves the group is the one the suite started."""
    return any(carries_mark(pid, mark) for pid in group_members(pgid))


def same_process(pid: int, started: int | None, mark: str, boot: str) -> bool:
    """`pid` is still the process the suite started: this boot, its start time, its mark."""
    return (bool(boot) and boot == boot_id() and started is not None and start_time(pid) == started
            and carries_mark(pid, mark))


def marked(mark: str) -> list[int]:
    """Pids of the processes started with `mark` in their environment.

    The undo of a process must be journalled before the process exists; its pid is not
    known then, a mark chosen beforehand is. A random mark names only what we started."""
    if not valid_mark(mark):
        raise ValueError(f"not a mark the suite makes: {mark!r}")
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and carries_mark(int(e), mark)]
