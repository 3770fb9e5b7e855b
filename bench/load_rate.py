"""How well one open-loop locust process keeps its schedule: achieved vs target rate and
schedule lag (p50/p99) at 100 and 500 requests/s and upward until it cannot, with every
request recorded; then bare closed-loop locust against the same target, and the ratio.

    python bench/load_rate.py [--seconds 8] [--rates 100,500] [--step 1.4] [--users 32]

Arrivals are constant-gap (the same schedule lag as Poisson's, without its noise in the
achieved rate). The target is HAProxy answering a valid OIP infer body itself (`http-request return`): a
few microseconds a request in C, so the figure is the load generator's, not a server's.
"Holds" means achieved >= 95% of the target and lag p99 <= 100 ms (the default
schedule_lag_p99_ms objective). Bare locust: a FastHttpUser posting the same body with no
listener and no records, `--users` closed-loop users; its requests/s are counted at the
target (HAProxy's frontend counter). Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from load_ratio import BARE, lb_requests  # noqa: E402
from inferchaos.load.runner import LoadProfile, LoadRunner, group_members  # noqa: E402
from inferchaos.load.workload import reference  # noqa: E402
from inferchaos.probes.window import percentile  # noqa: E402
from inferchaos.targets.local.haproxy import find_haproxy  # noqa: E402
from inferchaos.ground.ports import free_ports  # noqa: E402

ANSWER = '{"model_name":"mlp","outputs":[{"name":"p","shape":[1,8],"datatype":"FP32","data":[0.125,0.125,0.125,0.125,0.125,0.125,0.125,0.125]}]}'


def start_target(tmp: Path) -> tuple[subprocess.Popen, str, str]:
    port, stats = free_ports(2)
    cfg = tmp / "haproxy.cfg"
    cfg.write_text(f"""global
  maxconn 4096
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
frontend answer
  bind 127.0.0.1:{port}
  http-request return status 200 content-type application/json string '{ANSWER}'
frontend stats
  bind 127.0.0.1:{stats}
  http-request use-service prometheus-exporter if {{ path /metrics }}
""")
    proc = subprocess.Popen([find_haproxy(), "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(0.5)
    return proc, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{stats}"


def open_loop(url: str, tmp: Path, rate: float, seconds: float) -> dict:
    log = tmp / f"open-{rate:g}.jsonl"
    # constant gaps: Poisson's own noise over a few seconds (±4% at 100/s over 6 s) would
    # blur "achieved vs target"; the schedule lag is the same measure either way
    load = LoadRunner(url, log, LoadProfile(rate=rate, arrival="constant", workload=reference(mix="infer=1")))
    try:
        load.start()
        time.sleep(seconds)
    finally:
        records = load.stop()
    settle = min(r.start for r in records) + 1.0  # the first second: the process warming up
    kept = [r for r in records if r.start >= settle]
    span = max(r.start for r in kept) - settle
    lag = [r.lag_s * 1000 for r in kept]
    return {"rate": rate, "achieved": len(kept) / span if span > 0 else 0.0, "records": len(records),
            "ok": sum(r.ok for r in records), "lag_p50_ms": percentile(lag, 50), "lag_p99_ms": percentile(lag, 99),
            "latency_p99_ms": percentile([r.latency_s * 1000 for r in kept], 99)}


def holds(run: dict) -> bool:
    return run["achieved"] >= 0.95 * run["rate"] and run["lag_p99_ms"] <= 100 and run["ok"] == run["records"]


def bare_closed_loop(url: str, stats: str, tmp: Path, users: int, seconds: float) -> float:
    locustfile = tmp / "bare.py"
    locustfile.write_text(BARE)
    proc = subprocess.Popen([sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "-u", str(users),
                             "-r", str(users), "--host", url, "--only-summary", "--exit-code-on-error", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        time.sleep(2.0)
        n0, t0 = lb_requests(stats), time.monotonic()
        time.sleep(seconds)
        n1, t1 = lb_requests(stats), time.monotonic()
    finally:
        proc.send_signal(2)
        proc.wait(20)
    return (n1 - n0) / (t1 - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rates", default="100,500")
    ap.add_argument("--step", type=float, default=1.4, help="factor between rates past the fixed ones")
    ap.add_argument("--users", type=int, default=32, help="bare locust's closed-loop users")
    a = ap.parse_args()
    print(f"# {platform.node()} {platform.machine()} Python {platform.python_version()}, one locust process, "
          f"{a.seconds:g} s a rate, target: HAProxy answering itself")
    with tempfile.TemporaryDirectory(prefix="load-rate-") as d:
        tmp = Path(d)
        proc, url, stats = start_target(tmp)
        try:
            print(f"{'target/s':>9} {'achieved/s':>10} {'lag p50 ms':>10} {'lag p99 ms':>10} {'p99 ms':>8} "
                  f"{'records':>8} {'failed':>6} holds")
            best, rate = None, 0.0
            rates = [float(r) for r in a.rates.split(",")]
            while True:
                rate = rates.pop(0) if rates else rate * a.step
                run = open_loop(url, tmp, rate, a.seconds)
                ok = holds(run)
                print(f"{run['rate']:9.0f} {run['achieved']:10.1f} {run['lag_p50_ms']:10.2f} {run['lag_p99_ms']:10.2f} "
                      f"{run['latency_p99_ms']:8.2f} {run['records']:8d} {run['records'] - run['ok']:6d} "
                      f"{'yes' if ok else 'no'}", flush=True)
                if ok:
                    best = run
                elif not rates:
                    break
            bare = bare_closed_loop(url, stats, tmp, a.users, a.seconds)
            print(f"highest rate held with records on: {best['rate']:.0f} req/s (achieved {best['achieved']:.0f})"
                  if best else "no rate held")
            print(f"bare closed-loop locust, {a.users} users, no records: {bare:.0f} req/s")
            if best:
                print(f"ratio open-loop held / bare closed-loop: {best['achieved'] / bare:.2f}")
        finally:
            proc.terminate()
            proc.wait(10)
            assert not group_members(proc.pid)


if __name__ == "__main__":
    main()
