"""`make demo` until the experiments land: start the local cluster, send real inference
through HAProxy, print what came back, write it under `reports/out/`, and stop."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from inferchaos.errors import InferchaosError
from load.burst import burst
from targets.local import ClusterSpec, LocalCluster


def main() -> int:
    out = Path("reports/out")
    out.mkdir(parents=True, exist_ok=True)
    print("demo: starting the local cluster (3 replicas, HAProxy, model store, feature store + pipeline)", flush=True)
    t0 = time.monotonic()
    try:
        cluster = LocalCluster(ClusterSpec(replicas=3), owner_pid=None).start(
            progress=lambda line: print(f"demo: {line}", flush=True))
    except InferchaosError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    try:
        started_s = time.monotonic() - t0
        print(f"demo: all replicas ready in {started_s:.2f}s; LB at {cluster.lb_url}", flush=True)
        res = burst(cluster.lb_url, seconds=5.0, concurrency=8)
        print(f"demo: {res.total} requests in {res.seconds:.1f}s ({res.rps:.0f} req/s), {res.ok} ok, "
              f"errors {dict(res.errors) or 'none'}")
        print(f"demo: latency p50 {res.percentile_ms(50):.1f} ms, p99 {res.percentile_ms(99):.1f} ms")
        print(f"demo: served by {dict(res.replicas)}")
        print(f"demo: distinct answers to the same input: {len(res.outputs)} (deterministic: "
              f"{'yes' if len(res.outputs) == 1 else 'NO'})")
        report = {
            "started_s": round(started_s, 3), "requests": res.total, "ok": res.ok, "errors": dict(res.errors),
            "rps": round(res.rps, 1), "p50_ms": round(res.percentile_ms(50), 2),
            "p99_ms": round(res.percentile_ms(99), 2), "replicas": dict(res.replicas),
            "distinct_answers": len(res.outputs),
        }
        (out / "demo.json").write_text(json.dumps(report, indent=2))
        print(f"demo: wrote {out / 'demo.json'}")
        return 0 if res.ok and not res.errors and len(res.outputs) == 1 else 1
    finally:
        cluster.stop()
        print("demo: cluster stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
