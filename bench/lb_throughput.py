"""Local cluster figures: start time to all-ready, and requests/s through HAProxy at saturation.

    python bench/lb_throughput.py [--replicas 3] [--starts 3] [--seconds 8] [--concurrency 8,32,64,128]
                                  [--server-arg=--batch-latency-ms=0 --server-arg=--per-item-latency-ms=0]

With the default server, the ceiling is the simulated GPU (8 rows per 20 + 8x2 ms batch,
about 222 rows/s per replica); with its time set to 0 the ceiling is the software stack
(HAProxy, aiohttp, numpy, the client) on this machine's cores.

Prints numbers only; nothing here is asserted. The client runs in this process on the same
machine as the cluster, so on a small machine it competes with the servers for CPU: the
figure is the whole box's saturation point, client included.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

from inferchaos.load.burst import burst
from inferchaos.targets.local import ClusterSpec, LocalCluster


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--starts", type=int, default=3, help="cold starts to time")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--concurrency", default="8,32,64,128")
    ap.add_argument("--server-arg", action="append", default=[],
                    help="reference-server option, e.g. --server-arg=--batch-latency-ms=0 (CPU-bound stack)")
    args = ap.parse_args()
    print(f"# {' '.join([os.path.basename(sys.executable)] + sys.argv)}")
    print(f"# machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")

    spec = ClusterSpec(replicas=args.replicas, server_args=tuple(args.server_arg))
    times = []
    for _ in range(args.starts):
        t0 = time.monotonic()
        cluster = LocalCluster(spec).start()
        times.append(time.monotonic() - t0)
        cluster.stop()
    print(f"start to all-ready, {args.replicas} replicas: median {statistics.median(times):.2f}s "
          f"(runs: {', '.join(f'{t:.2f}' for t in times)})")

    with LocalCluster(spec) as cluster:
        burst(cluster.lb_url, seconds=2, concurrency=8)  # warm connections and slowstart
        time.sleep(10)  # HAProxy's slowstart ramp (10 s) must end before measuring full weight
        for c in [int(x) for x in args.concurrency.split(",")]:
            res = burst(cluster.lb_url, seconds=args.seconds, concurrency=c)
            print(f"concurrency {c:>3}: {res.rps:7.0f} req/s  p50 {res.percentile_ms(50):6.1f} ms  "
                  f"p99 {res.percentile_ms(99):6.1f} ms  errors {sum(res.errors.values())}  "
                  f"per replica {dict(sorted(res.replicas.items()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
