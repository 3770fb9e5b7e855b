"""Distributed load on this machine: req/s achieved and every request accounted for at 1, 2
and 4 locust worker processes under one master, and what the master costs per record.

    python bench/load_workers.py [--rate 300] [--seconds 8] [--workers 1,2,4] [--target reference|haproxy]

Each run is open loop at `--rate` (constant gaps, infer only) for `--seconds`. `achieved/s`:
requests actually sent (scheduled time + schedule lag) in the steady window (after the
first second) per second; `lag p99`: how late they went out. `server`: requests the target's HAProxy frontend counted, to
compare with the records that say they were sent (`missing` = server - records sent:
requests with no record; 0 is the point). `lost`: workers the master named lost. Master CPU
per record: /proc/<master pid>/stat utime+stime over the steady window (after the first
second: imports and spawning excluded), over the records it received in that window (it
parses and writes them all: the cost that grows with the rate); `master s`: its CPU seconds
in all, read just before the stop. Workers CPU is theirs together, per record. 1 worker is a master with one worker process (what a pod is);
`standalone` is the one-process load without a master, for comparison (its CPU per record is
the whole load's). Target `reference`: the reference server (one replica behind HAProxy,
tests' LocalCluster); `haproxy`: HAProxy answering the infer body itself (the load
generator's limit, not a server's). Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from load_rate import start_target  # noqa: E402
import httpx  # noqa: E402
from inferchaos.load.records import read_parts  # noqa: E402
from inferchaos.load.runner import LOCUSTFILE, LoadProfile, LoadRunner, free_port, group_members  # noqa: E402
from inferchaos.load.workload import reference  # noqa: E402
from inferchaos.probes.window import percentile  # noqa: E402

NOT_SENT = "not sent"


def lb_requests(stats_url: str) -> int:
    """HTTP requests HAProxy's frontends other than its stats one have received so far."""
    text = httpx.get(f"{stats_url}/metrics", timeout=5).text
    return sum(int(float(m.group(2))) for m in
               re.finditer(r'^haproxy_frontend_http_requests_total\{proxy="([^"]*)"[^}]*\} (\S+)$', text, re.M)
               if m.group(1) != "stats")


def cpu_s(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return 0.0
    f = stat[stat.rfind(b")") + 2:].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def one_run(url: str, stats: str, tmp: Path, rate: float, seconds: float, workers: int | None) -> dict:
    """workers None: standalone; 1: a master (master=) and one worker process started here."""
    log = tmp / f"w{workers}.jsonl"
    profile = LoadProfile(rate=rate, processes=max(1, workers or 1), arrival="constant",
                          workload=reference(mix="infer=1"))
    extra: list[subprocess.Popen] = []
    kw = {}
    if workers == 1:
        port = free_port()
        kw["master"] = f"127.0.0.1:{port}"
        extra.append(subprocess.Popen([sys.executable, "-P", "-m", "locust", "-f", str(LOCUSTFILE), "--worker",
                                       "--master-host", "127.0.0.1", "--master-port", str(port)], cwd=tmp,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
    load = LoadRunner(url, log, profile, **kw)
    n0 = lb_requests(stats)
    try:
        load.start()
        t0 = time.monotonic()
        time.sleep(1.0)  # past the start: imports and spawning are not the steady cost
        pids = [load.pid] + load.worker_pids + [p.pid for p in extra]
        cpu0, received0 = [cpu_s(p) for p in pids], len(read_parts(log))
        time.sleep(seconds - 1.0)  # the measurement: a fixed stretch of load
        cpu1, received = [cpu_s(p) for p in pids], len(read_parts(log)) - received0
        master_cpu, workers_cpu = cpu1[0] - cpu0[0], sum(cpu1[1:]) - sum(cpu0[1:])
        total_master_cpu = cpu1[0]
        t1 = time.monotonic()
    finally:
        records = load.stop()
        for p in extra:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    server = lb_requests(stats) - n0
    sent = [r for r in records if not (r.error or "").startswith(NOT_SENT)]
    settle = t0 + 1.0
    in_window = [r for r in sent if settle <= r.start + r.lag_s <= t1]
    return {"workers": "standalone" if workers is None else str(workers), "rate": rate,
            "achieved": len(in_window) / (t1 - settle), "records": len(records),
            "lag_p99_ms": percentile([r.lag_s * 1000 for r in in_window], 99), "sent": len(sent),
            "server": server, "missing": server - len(sent), "ok": sum(r.ok for r in records),
            "incomplete": sum(r.incomplete for r in records), "lost": len(load.lost_workers()),
            "master_ms": 1000 * master_cpu / received if received else float("nan"),
            "workers_ms": 1000 * workers_cpu / received if received and len(pids) > 1 else float("nan"),
            "master_total_s": total_master_cpu,
            "left": group_members(load.pgid),
            "errors": Counter(_short(r.error) for r in records if not r.ok).most_common(2)}


def _short(error: str | None) -> str:
    return (error or "not ok").split(" (")[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=300.0)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--target", choices=("reference", "haproxy"), default="reference")
    ap.add_argument("--no-standalone", action="store_true")
    a = ap.parse_args()
    counts = [None] * (not a.no_standalone) + [int(w) for w in a.workers.split(",")]
    print(f"# {platform.node()} {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"open loop {a.rate:g} req/s constant, {a.seconds:g} s a run; target: {a.target}")
    with tempfile.TemporaryDirectory(prefix="load-workers-") as d, ExitStack() as stack:
        tmp = Path(d)
        if a.target == "haproxy":
            proc, url, stats = start_target(tmp)
            stack.callback(lambda: (proc.terminate(), proc.wait(10)))
        else:
            from inferchaos.targets.local import ClusterSpec, LocalCluster
            cluster = stack.enter_context(LocalCluster(ClusterSpec(replicas=1), tmp / "cluster",
                                                       owner_pid=os.getpid()))
            cluster.wait_steady(60)
            url, stats = cluster.lb_url, cluster.state.stats_url
        print(f"{'workers':>10} {'achieved/s':>10} {'lag p99 ms':>10} {'records':>8} {'server':>7} {'missing':>7} {'failed':>6} "
              f"{'incompl':>7} {'lost':>4} {'master ms/rec':>13} {'workers ms/rec':>14} {'master s':>8}")
        for w in counts:
            r = one_run(url, stats, tmp, a.rate, a.seconds, w)
            print(f"{r['workers']:>10} {r['achieved']:10.1f} {r['lag_p99_ms']:10.2f} {r['records']:8d} {r['server']:7d} {r['missing']:7d} "
                  f"{r['records'] - r['ok']:6d} {r['incomplete']:7d} {r['lost']:4d} {r['master_ms']:13.3f} "
                  f"{r['workers_ms']:14.3f} {r['master_total_s']:8.2f}  {r['errors'] or ''}" + (f"  LEFT RUNNING: {r['left']}" if r["left"] else ""), flush=True)


if __name__ == "__main__":
    main()
