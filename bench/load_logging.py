"""What recording every request costs the load generator: requests/s and locust CPU per
request, with the request log on and off (same users, same local cluster).

    python bench/load_logging.py [--seconds 10] [--users 16] [--processes 1] [--replicas 3] [--rounds 1]

With logging on, requests/s counts the records whose start lies in the measured window;
with it off, it comes from locust's own totals (its --json-file stats: requests over the
time from its first to its last request). Locust's CPU time is read from /proc for its
process group over the measured window. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inferchaos.load.runner import LoadProfile, LoadRunner  # noqa: E402
from inferchaos.targets.local import ClusterSpec, LocalCluster  # noqa: E402


def locust_totals(json_file: Path) -> tuple[int, float]:
    """(requests, seconds from first to last request) from locust's --json-file stats."""
    entries = json.loads(json_file.read_text())
    n = sum(e["num_requests"] for e in entries)
    if not entries:
        return 0, 0.0
    first = min(e["start_time"] for e in entries)
    last = max(e["last_request_timestamp"] or first for e in entries)
    return n, max(last - first, 1e-9)


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of a process group."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            f = stat[stat.rfind(b")") + 2:].split()
            if int(f[2]) == pgid:
                total += int(f[11]) + int(f[12])  # utime, stime
    return total / tick


def one_run(url: str, out: Path, profile: LoadProfile, seconds: float, record: bool) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    stats = out / "stats.json"  # locust appends ".json" to what --json-file names
    load = LoadRunner(url, out / "requests.jsonl", profile, record_requests=record,
                      extra_args=["--json-file", str(out / "stats")])
    try:
        load.start()
        t0, cpu0 = time.monotonic(), group_cpu_s(load.pgid)
        time.sleep(seconds)  # the measurement itself: a fixed stretch of load
        t1, cpu1 = time.monotonic(), group_cpu_s(load.pgid)
        records = load.stop()
    finally:
        load.stop()
    cpu = cpu1 - cpu0  # steady state only: not locust's start-up, not its summary
    n_locust, span = locust_totals(stats)
    res = {"record": record, "locust_requests": n_locust, "locust_rps": n_locust / span, "cpu_s": cpu,
           "cmd": load.command()}
    if record:
        inside = [r for r in records if t0 <= r.start < t1]
        res.update(records=len(records), window_rps=len(inside) / (t1 - t0),
                   ok=sum(r.ok for r in records), log_bytes=(out / "requests.jsonl").stat().st_size)
    res["rps"] = res["window_rps"] if record else res["locust_rps"]
    res["cpu_ms_per_req"] = 1000 * cpu / max(res["rps"] * (t1 - t0), 1)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--users", type=int, default=16)
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1, help="off/on pairs, alternating")
    ap.add_argument("--mix", default="infer=8,completion=1,stream=1")
    a = ap.parse_args()
    profile = LoadProfile(users=a.users, spawn_rate=max(50.0, float(a.users)), processes=a.processes, mix=a.mix)

    print("command:", " ".join(shlex.quote(x) for x in [sys.executable] + sys.argv))
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="inferchaos-bench-") as tmp:
        tmp_path = Path(tmp)
        with LocalCluster(ClusterSpec(replicas=a.replicas), tmp_path / "cluster", owner_pid=os.getpid()) as c:
            print(f"target: local cluster, {a.replicas} replicas behind HAProxy at {c.lb_url}")
            results: dict[bool, list[dict]] = {False: [], True: []}
            for i in range(a.rounds):
                for record in (False, True):
                    r = one_run(c.lb_url, tmp_path / f"run{i}-{'on' if record else 'off'}", profile, a.seconds,
                                record)
                    if i == 0 and not record:
                        print("locust:", " ".join(shlex.quote(x) for x in r["cmd"]))
                    results[record].append(r)
                    extra = (f", {r['records']} records ({r['ok']} ok), {r['log_bytes'] / max(r['records'], 1):.0f} "
                             f"B/record, locust's own count {r['locust_rps']:.1f} req/s") if record else ""
                    print(f"  round {i + 1} logging {'on ' if record else 'off'}: {r['rps']:8.1f} req/s, "
                          f"locust CPU {r['cpu_s']:.2f} s = {r['cpu_ms_per_req']:.3f} ms/request{extra}")
    off = sum(r["rps"] for r in results[False]) / a.rounds
    on = sum(r["rps"] for r in results[True]) / a.rounds
    cpu_off = sum(r["cpu_ms_per_req"] for r in results[False]) / a.rounds
    cpu_on = sum(r["cpu_ms_per_req"] for r in results[True]) / a.rounds
    print(f"users={a.users} processes={a.processes} seconds={a.seconds:g} rounds={a.rounds} mix={a.mix}")
    print(f"requests/s  logging off: {off:.1f}   logging on: {on:.1f}   on/off = {on / off:.3f}")
    print(f"locust CPU  logging off: {cpu_off:.3f} ms/req   on: {cpu_on:.3f} ms/req   on/off = {cpu_on / cpu_off:.3f}")


if __name__ == "__main__":
    main()
