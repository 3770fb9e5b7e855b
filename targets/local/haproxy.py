"""HAProxy in front of the replicas: its configuration and its admin socket.

The backend pre-declares `slots` servers with `server-template`; the supervisor points a
slot at a replica's port at runtime (`set server ... addr`), so a replacement takes its
predecessor's place without a reload, and HAProxy's own health checks decide when it
is up. That keeps failover HAProxy's doing, which is what the failover probe measures.

Nothing reaches haproxy.cfg unchecked: a value with a newline would add configuration lines
(a `--ready-path "/x\n  stats admin if TRUE"`), a space or quote would add arguments. Every
value `render_config` writes passes a check here first (`ClusterSpec.validate` runs the same
checks before anything starts): paths a strict URL path charset, ports whole numbers in
1..65535, addresses loopback literals, names a strict charset. A bad one is a UsageError.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from inferchaos.ground.errors import ClusterStartError, UsageError

BACKEND = "replicas"
#: The same replicas behind HAProxy as most fleets first ship it (round robin, its default
#: check timing, a 30-s server timeout, retries on connection failures only): the
#: comparison that shows what the tuning of BACKEND buys when a replica hangs.
PLAIN_BACKEND = "plain"
BACKENDS = (BACKEND, PLAIN_BACKEND)
#: `show servers state` operational states (srv_op_state).
OP_STATES = {0: "stopped", 1: "starting", 2: "running", 3: "stopping"}
#: admin-state bits that mean "in maintenance" (forced, inherited, resolver).
MAINT_MASK = 0x01 | 0x02 | 0x20


#: the one address every bind and placeholder server uses.
LOOPBACK = "127.0.0.1"
#: an HTTP path (and query) as RFC 3986 allows it, minus what HAProxy's parser would read as
#: syntax (spaces, quotes, `#`, `\\`, `$`): unreserved, a few sub-delims, `:@/?%`.
URL_PATH = re.compile(r"/(?:[A-Za-z0-9._~!&()*+,;=:@/?-]|%[0-9A-Fa-f]{2}){0,1023}")
#: HAProxy proxy and server names: a letter, then letters, digits, `_.-`.
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
#: a file path in the config (the admin socket): absolute, no space, quote, `#`, `$` or `\\`.
FILE_PATH = re.compile(r"/[A-Za-z0-9._~+,=:@%/-]{0,106}")
MAX_SLOTS = 1000


def check_ready_path(path: object, what: str = "--ready-path") -> str:
    if not isinstance(path, str) or not URL_PATH.fullmatch(path):
        raise UsageError(f"{what} {str(path)[:100]!r}: expected a URL path starting with / (letters, digits and "
                         f"-._~!&()*+,;=:@/?%XX only; no spaces, quotes, # or line breaks)")
    return path


def check_port(port: object, what: str = "port", *, zero: bool = False) -> int:
    """A whole number in 1..65535 (0 too with `zero`: a free one is picked)."""
    if type(port) is not int or not (0 if zero else 1) <= port <= 65535:
        raise UsageError(f"{what} {port!r}: expected a whole number in {0 if zero else 1}..65535")
    return port


def check_slots(slots: object) -> int:
    if type(slots) is not int or not 1 <= slots <= MAX_SLOTS:
        raise UsageError(f"LB slots {slots!r}: expected a whole number in 1..{MAX_SLOTS}")
    return slots


def check_name(name: object, what: str = "name") -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise UsageError(f"{what} {str(name)[:80]!r}: expected a letter, then letters, digits, _ . - (64 at most)")
    return name


def check_loopback(addr: object) -> str:
    try:
        ok = isinstance(addr, str) and ipaddress.ip_address(addr).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise UsageError(f"address {str(addr)[:80]!r}: HAProxy binds and checks on loopback IP addresses only")
    return addr  # type: ignore[return-value]


def check_file_path(path: object, what: str = "HAProxy admin socket") -> str:
    text = str(path) if isinstance(path, (str, Path)) else None
    if text is None or not FILE_PATH.fullmatch(text):
        raise UsageError(f"{what} {str(path)[:120]!r}: expected an absolute path of at most 107 characters without "
                         f"spaces, quotes, #, $ or backslashes (choose another --state-dir)")
    return text


def find_haproxy() -> str:
    path = shutil.which("haproxy")
    if path is None:
        raise ClusterStartError(
            "HAProxy not found on PATH: install it (Debian/Ubuntu: apt-get install -y haproxy)"
        )
    return path


def slot_name(slot: int) -> str:
    return f"r{slot}"


def render_config(lb_port: int, stats_port: int, socket_path: Path, slots: int, ready_path: str,
                  plain_port: int) -> str:
    """haproxy.cfg, every value checked first (UsageError naming the bad one)."""
    for port, what in ((lb_port, "LB port"), (stats_port, "HAProxy stats port"), (plain_port, "plain LB port")):
        check_port(port, what)
    socket_path = check_file_path(socket_path)
    check_slots(slots)
    ready_path = check_ready_path(ready_path)
    for name in BACKENDS:
        check_name(name, "HAProxy backend")
    check_name(slot_name(slots), "HAProxy server")
    check_loopback(LOOPBACK)
    return f"""\
global
  stats socket {socket_path} level admin
  maxconn 4096

defaults
  mode http
  timeout connect 1s
  timeout client 60s
  timeout server 30s
  timeout check 1s
  timeout http-keep-alive 10s

frontend inference
  bind {LOOPBACK}:{lb_port}
  default_backend {BACKEND}

frontend inference_plain
  bind {LOOPBACK}:{plain_port}
  default_backend {PLAIN_BACKEND}

frontend stats
  bind {LOOPBACK}:{stats_port}
  http-request use-service prometheus-exporter if {{ path /metrics }}
  stats enable
  stats uri /stats

backend {BACKEND}
  balance leastconn
  # Without it HAProxy holds back SSE chunks and time-to-first-token through the LB is
  # meaningless (measured: all tokens arrived at the end).
  option http-no-delay
  option httpchk
  http-check send meth GET uri {ready_path}
  http-check expect status 200
  # A hung replica keeps its socket open: only a check timing out ejects it, and meanwhile
  # what was sent to it waits. Least connections stops sending it new work (it finishes
  # none); checks with a 1-s timeout take it out. A short `timeout server` with retries on
  # response-timeout would bound the wait of the few that sat on it, but under overload it
  # turns every slow answer into a retry the busy replicas must also serve (measured: a 2-s
  # timeout took an autoscaled surge's server queue p99 from 0.05 s to 20-30 s): without
  # a retry budget, which HAProxy lacks, it stays at the 30-s default.
  default-server inter 1s fall 2 rise 2 slowstart 10s observe layer7 error-limit 5 on-error mark-down
  retries 3
  option redispatch 1
  retry-on conn-failure empty-response response-timeout 502 503 504
  server-template r 1-{slots} {LOOPBACK}:9 check disabled

backend {PLAIN_BACKEND}
  # HAProxy's defaults: round robin, checks every 2 s (3 to fail, 2 to rise), `timeout
  # server` 30 s from the defaults section, retries on connection failures only.
  balance roundrobin
  option http-no-delay
  option httpchk
  http-check send meth GET uri {ready_path}
  http-check expect status 200
  server-template r 1-{slots} {LOOPBACK}:9 check disabled
"""


def check_config(binary: str, config: Path) -> None:
    res = subprocess.run([binary, "-c", "-q", "-f", str(config)], capture_output=True, text=True)
    if res.returncode != 0:
        last = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise ClusterStartError(f"HAProxy rejected its configuration {config}: {last[0]}")


@dataclass(frozen=True)
class ServerState:
    """One line of `show servers state`: what the LB thinks of one slot."""

    name: str
    addr: str
    port: int
    op_state: int
    admin_state: int
    weight: int
    since_change_s: int

    @property
    def state(self) -> str:
        if self.admin_state & MAINT_MASK:
            return "maint"
        return OP_STATES.get(self.op_state, f"unknown({self.op_state})")

    @property
    def up(self) -> bool:
        """Taking traffic: 'starting' is HAProxy's slowstart ramp, already in rotation."""
        return self.state in ("running", "starting")


class AdminSocket:
    """HAProxy's runtime API over its UNIX socket; one short connection per command.
    `backend` is the one whose servers `servers()` reads; slots move in every backend."""

    def __init__(self, path: Path | str, timeout_s: float = 2.0, backend: str = BACKEND) -> None:
        self.path = str(path)
        self.timeout_s = timeout_s
        self.backend = backend

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(self.timeout_s)
            s.connect(self.path)
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def point_slot(self, slot: int, port: int) -> None:
        """Aim a slot at a replica port and take it out of maintenance; checks decide 'up'."""
        check_slots(slot)
        check_port(port, "replica port")
        for backend in BACKENDS:
            name = f"{backend}/{slot_name(slot)}"
            self.command(f"set server {name} addr {LOOPBACK} port {port}")
            self.command(f"set server {name} state ready")

    def retire_slot(self, slot: int) -> None:
        check_slots(slot)
        for backend in BACKENDS:
            self.command(f"set server {backend}/{slot_name(slot)} state maint")

    def servers(self) -> list[ServerState]:
        out = self.command(f"show servers state {self.backend}")
        states = []
        for line in out.splitlines():
            if not line or line.startswith("#") or line.strip() == "1":
                continue
            f = line.split()
            if len(f) < 19:
                continue
            states.append(
                ServerState(
                    name=f[3], addr=f[4], port=int(f[18]), op_state=int(f[5]), admin_state=int(f[6]),
                    weight=int(f[7]), since_change_s=int(f[9]),
                )
            )
        return states
