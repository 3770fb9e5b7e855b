"""`inferchaos watch`: the live numbers of a running local cluster, for game days.

Every figure is read from the target, differenced between two readings, never derived
from what the watcher itself sent: requests and 5xx from HAProxy's own counters (`show
stat`, frontend `inference`), p99 from the replicas' `vllm:e2e_request_latency_seconds`
buckets (read as PromQL's `histogram_quantile` reads them), the servers' state from the
admin socket, and the faults still applied from the ledger.
"""

from __future__ import annotations

import csv
import io
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import httpx

from inferchaos.faults.ledger import Entry, Ledger
from inferchaos.probes.queue_time import Histogram, parse
from inferchaos.targets.local.cluster import LocalCluster
from inferchaos.targets.local.control import read_desired
from inferchaos.targets.local.processes import stopped
from inferchaos.targets.local.state import ReplicaRecord

E2E = "vllm:e2e_request_latency_seconds"
FRONTEND = "inference"
#: A replica that does not answer its /metrics in this long is left out of one reading.
SCRAPE_TIMEOUT_S = 0.5


def frontend_counters(show_stat: str, frontend: str = FRONTEND) -> tuple[int, int]:
    """(requests, 5xx responses) so far, from `show stat` CSV: the frontend's `req_tot`
    and `hrsp_5xx` (what clients got, HAProxy's own 503s included)."""
    text = show_stat.lstrip("# ")
    for row in csv.DictReader(io.StringIO(text)):
        if row.get("pxname") == frontend and row.get("svname") == "FRONTEND":
            return int(row.get("req_tot") or 0), int(row.get("hrsp_5xx") or 0)
    raise ValueError(f"no frontend {frontend!r} in `show stat`")


def scrape_latency(replicas: list[ReplicaRecord]) -> dict[str, Histogram]:
    """replica -> its end-to-end latency histogram now. A stopped (SIGSTOPped) replica
    cannot answer and is skipped; one that does not answer in time is left out."""
    live = [r for r in replicas if not stopped(r.pid)]

    def one(r: ReplicaRecord) -> tuple[str, Histogram | None]:
        try:
            return r.name, parse(httpx.get(f"http://127.0.0.1:{r.port}/metrics", timeout=SCRAPE_TIMEOUT_S).text, E2E)
        except (httpx.HTTPError, ValueError):
            return r.name, None

    if not live:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(live))) as pool:
        return {name: h for name, h in pool.map(one, live) if h is not None}


@dataclass(frozen=True)
class Snapshot:
    """One reading of the target's counters, at monotonic `t`."""

    t: float
    wall: float
    requests: int
    errors_5xx: int
    latency: dict[str, Histogram]
    ready: int
    replicas: int
    desired: int
    warm_ready: int
    warm_desired: int
    lb: list[tuple[str, str, int]]  # (server, state, seconds since its last change)
    faults: list[Entry] = field(default_factory=list)


@dataclass(frozen=True)
class Reading:
    """What happened between two snapshots."""

    now: Snapshot
    interval_s: float
    requests: int
    errors_5xx: int
    p99_ms: float | None
    latency_count: int

    @property
    def rps(self) -> float:
        return self.requests / self.interval_s if self.interval_s > 0 else 0.0

    @property
    def eps(self) -> float:
        return self.errors_5xx / self.interval_s if self.interval_s > 0 else 0.0


def take(cluster: LocalCluster, ledger: Ledger) -> Snapshot:
    state = cluster.state
    admin = cluster.admin()
    requests, errors = frontend_counters(admin.command("show stat"))
    active, standby = state.active(), state.standby()
    desired = {**state.spec, **read_desired(cluster.state_dir)}
    slots = {f"r{r.slot}" for r in active}
    lb = [(s.name, s.state, s.since_change_s) for s in admin.servers() if s.name in slots]
    return Snapshot(
        t=time.monotonic(), wall=time.time(), requests=requests, errors_5xx=errors,
        latency=scrape_latency(active), ready=sum(r.phase == "ready" for r in active), replicas=len(active),
        desired=int(desired["replicas"]), warm_ready=sum(r.phase == "ready" for r in standby),
        warm_desired=int(desired["warm_pool"]), lb=sorted(lb, key=lambda x: int(x[0][1:])),
        faults=sorted(ledger.open_entries(), key=lambda e: e.wall),
    )


def between(before: Snapshot, now: Snapshot) -> Reading:
    merged: Histogram | None = None
    for name, h in now.latency.items():
        d = h.minus(before.latency[name]) if name in before.latency else None
        if d is None:  # a replica new since the last reading: its whole history is not this interval's
            continue
        merged = d if merged is None else merged.plus(d)
    q = merged.quantile(0.99) if merged is not None else None
    return Reading(now, now.t - before.t, max(0, now.requests - before.requests),
                   max(0, now.errors_5xx - before.errors_5xx), None if q is None else q * 1000,
                   int(merged.count) if merged is not None else 0)


def _p99(r: Reading) -> str:
    return f"{r.p99_ms:.0f} ms" if r.p99_ms is not None else "-"


def _fault_word(e: Entry, now_wall: float) -> str:
    return f"{e.fault} {e.id} ({now_wall - e.wall:.0f}s ago)"


def line(r: Reading) -> str:
    """One plain line per refresh, for logs and pipes."""
    s = r.now
    lb = ",".join(f"{name}:{state}" for name, state, _ in s.lb) or "-"
    faults = ",".join(f"{e.fault}:{e.id}" for e in s.faults) or "none"
    return (f"{time.strftime('%H:%M:%S', time.localtime(s.wall))} req/s={r.rps:.1f} 5xx/s={r.eps:.1f} "
            f"p99={_p99(r)} ready={s.ready}/{s.desired} warm={s.warm_ready}/{s.warm_desired} lb={lb} "
            f"faults={faults}")


def frame(r: Reading, where: str) -> list[str]:
    """The screen a terminal shows, redrawn in place."""
    s = r.now
    out = [f"inferchaos watch  {where}  {time.strftime('%H:%M:%S', time.localtime(s.wall))}  (Ctrl-C stops)",
           f"  requests/s {r.rps:8.1f}    errors/s (5xx) {r.eps:6.1f}    p99 {_p99(r)}",
           f"  replicas   {s.ready}/{s.desired} ready, {s.replicas} in slots, warm pool {s.warm_ready}/{s.warm_desired}",
           "  LB         " + ("  ".join(f"{n} {st} ({since}s)" for n, st, since in s.lb) or "-")]
    if not s.faults:
        out.append("  faults     none applied")
    for i, e in enumerate(s.faults):
        out.append(("  faults     " if i == 0 else "             ") + _fault_word(e, s.wall)
                   + f"  -> inferchaos revert {e.id}")
    return out


def watch(cluster: LocalCluster, ledger: Ledger, interval_s: float, once: bool, tty: bool,
          write: Callable[[str], None], running: Callable[[], bool] = lambda: True) -> int:
    """Refresh every `interval_s` until Ctrl-C (0), or the cluster stops (1)."""
    where = str(cluster.state_dir)
    before = take(cluster, ledger)
    drawn = 0
    while running():
        time.sleep(interval_s)
        if not cluster.running():
            write(f"inferchaos: the cluster in {where} is not running any more\n")
            return 1
        now = take(cluster, ledger)
        reading = between(before, now)
        before = now
        if tty:
            lines = frame(reading, where)
            write((f"\x1b[{drawn}F\x1b[J" if drawn else "") + "\n".join(lines) + "\n")
            drawn = len(lines)
        else:
            write(line(reading) + "\n")
        if once:
            return 0
    return 0
