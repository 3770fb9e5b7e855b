"""What our load generator costs per request against bare locust: requests per locust CPU
second with our locustfile and request log (load/locustfile.py through LoadRunner) versus a
minimal locustfile (one FastHttpUser posting the same OIP infer body, no listener).

    python bench/load_ratio.py [--seconds 10] [--users 16] [--rounds 2] [--replicas 3] [--mix infer=1]

The target is a local cluster with the simulated GPU time at 0, so its ceiling is far above
what one locust process drives and the figure is the load generator's own cost. Requests are
counted at the target (HAProxy's frontend counter over the measured window, the same for
both), locust's CPU from /proc (utime + stime of every process in its group) over the same
window. Runs alternate (bare, ours; then ours, bare; ...), after HAProxy's slow start is over.
On a small machine the cluster shares the cores with locust and sets the requests/s; the
comparable figure is locust's CPU per request. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inferchaos.load.runner import LoadProfile, LoadRunner, group_members  # noqa: E402
from inferchaos.targets.local import ClusterSpec, LocalCluster, wait_for  # noqa: E402

ZERO_GPU = ("--batch-latency-ms=0", "--per-item-latency-ms=0")
BARE = '''"""Bare locust: one FastHttpUser posting the OIP infer body, nothing recorded."""
import json
import random

from locust import FastHttpUser, constant, task

HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


class Bare(FastHttpUser):
    wait_time = constant(0)

    @task
    def infer(self):
        data = [round(random.uniform(-1.0, 1.0), 4) for _ in range(16)]
        body = json.dumps({"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": data}]})
        self.client.post("/v2/models/mlp/infer", data=body.encode(), headers=HEADERS)
'''


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of a process group."""
    total = 0
    for pid in group_members(pgid):
        try:
            stat = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:
            continue
        f = stat[stat.rfind(b")") + 2:].split()
        total += int(f[11]) + int(f[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def lb_requests(stats_url: str) -> int:
    """HTTP requests HAProxy's frontends have received so far (its Prometheus exporter)."""
    text = httpx.get(f"{stats_url}/metrics", timeout=5).text
    return sum(int(float(m.group(1))) for m in
               re.finditer(r"^haproxy_frontend_http_requests_total\{[^}]*\} (\S+)$", text, re.M))


def measure(pgid: int, stats_url: str, seconds: float) -> tuple[int, float, float]:
    """(requests at the target, locust CPU seconds, wall seconds) over a steady window."""
    time.sleep(1.0)  # past the spawn: measure the steady state only
    n0, cpu0, t0 = lb_requests(stats_url), group_cpu_s(pgid), time.monotonic()
    time.sleep(seconds)  # the measurement itself: a fixed stretch of load
    n1, cpu1, t1 = lb_requests(stats_url), group_cpu_s(pgid), time.monotonic()
    return n1 - n0, cpu1 - cpu0, t1 - t0


def run_bare(url: str, stats_url: str, locustfile: Path, users: int, seconds: float, log: Path) -> dict:
    cmd = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "-u", str(users), "-r", str(users),
           "--host", url, "--exit-code-on-error", "0", "--only-summary", "--loglevel", "INFO"]
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while b"All users spawned" not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bare locust did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        n, cpu, wall = measure(proc.pid, stats_url, seconds)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return {"cmd": cmd, "requests": n, "cpu_s": cpu, "wall_s": wall}


def run_ours(url: str, stats_url: str, users: int, mix: str, seconds: float, out: Path) -> dict:
    load = LoadRunner(url, out / "requests.jsonl", LoadProfile(users=users, spawn_rate=float(users), mix=mix))
    try:
        load.start()
        n, cpu, wall = measure(load.pgid, stats_url, seconds)
    finally:
        records = load.stop()
    return {"cmd": load.command(), "requests": n, "cpu_s": cpu, "wall_s": wall, "records": len(records),
            "ok": sum(r.ok for r in records)}


def describe(r: dict) -> str:
    rps, per_cpu = r["requests"] / r["wall_s"], r["requests"] / max(r["cpu_s"], 1e-9)
    return (f"{rps:8.1f} req/s  locust CPU {r['cpu_s']:5.2f} s ({100 * r['cpu_s'] / r['wall_s']:3.0f}% of a core)  "
            f"{per_cpu:7.1f} req per CPU-s  {1000 * r['cpu_s'] / max(r['requests'], 1):.3f} ms CPU/req")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="measured window per run")
    ap.add_argument("--users", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2, help="bare/ours pairs, alternating")
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--mix", default="infer=1", help="our locustfile's task mix (infer=1: the same request as bare)")
    a = ap.parse_args()
    print("command:", " ".join(shlex.quote(x) for x in [os.path.relpath(sys.executable)] + sys.argv))
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.2f} at start")
    res: dict[str, list[dict]] = {"bare": [], "ours": []}
    with tempfile.TemporaryDirectory(prefix="inferchaos-ratio-") as tmp:
        tmp_path = Path(tmp)
        bare_file = tmp_path / "bare_locustfile.py"
        bare_file.write_text(BARE)
        spec = ClusterSpec(replicas=a.replicas, server_args=ZERO_GPU)
        with LocalCluster(spec, tmp_path / "cluster", owner_pid=os.getpid()) as c:
            stats_url = c.state.stats_url or ""
            print(f"target: local cluster, {a.replicas} replicas, server args {' '.join(ZERO_GPU)}, LB {c.lb_url}")
            # HAProxy's 10-s slow start must be over, or the first run measures the ramp
            wait_for(lambda: all(s.state == "running" for s in c.lb_servers()), 60, "every slot past slow start")
            for i in range(a.rounds):
                for kind in ("bare", "ours") if i % 2 == 0 else ("ours", "bare"):  # alternate who goes first
                    if kind == "bare":
                        r = run_bare(c.lb_url, stats_url, bare_file, a.users, a.seconds, tmp_path / f"bare{i}.log")
                        shown = " ".join(shlex.quote(x) for x in r["cmd"]).replace(str(tmp_path), "$TMP")
                        more = ""
                    else:
                        r = run_ours(c.lb_url, stats_url, a.users, a.mix, a.seconds, tmp_path / f"ours{i}")
                        shown = " ".join(shlex.quote(x) for x in r["cmd"]) + f" (INFERCHAOS_MIX={a.mix})"
                        more = f"  ({r['records']} records, {r['ok']} ok)"
                    res[kind].append(r)
                    if i == 0:
                        print(f"{kind}: {shown}")
                    print(f"  round {i + 1} {kind}: {describe(r)}{more}", flush=True)
    tot = {k: {f: sum(r[f] for r in v) for f in ("requests", "cpu_s", "wall_s")} for k, v in res.items()}
    per_cpu = {k: t["requests"] / max(t["cpu_s"], 1e-9) for k, t in tot.items()}
    rps = {k: t["requests"] / t["wall_s"] for k, t in tot.items()}
    print(f"users={a.users} seconds={a.seconds:g} rounds={a.rounds} mix={a.mix}; "
          f"load average {os.getloadavg()[0]:.2f} at end")
    print(f"requests/s          bare: {rps['bare']:8.1f}   ours: {rps['ours']:8.1f}   ours/bare = "
          f"{rps['ours'] / rps['bare']:.3f}")
    print(f"requests per CPU-s  bare: {per_cpu['bare']:8.1f}   ours: {per_cpu['ours']:8.1f}   ours/bare = "
          f"{per_cpu['ours'] / per_cpu['bare']:.3f}")
    print(f"our load generator costs x{per_cpu['bare'] / per_cpu['ours']:.2f} the locust CPU per request of bare locust")


if __name__ == "__main__":
    main()
