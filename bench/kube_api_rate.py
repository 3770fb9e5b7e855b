"""How hard a run leans on the Kubernetes API server: requests per second, by kind.

    python bench/kube_api_rate.py [--experiment experiments/test_replica_hang.py] [--hold-s 12]

One experiment, run as a user runs it (`pytest` with `--target kubernetes`, in its own
process), against the project's fake cluster (tests/support/kubestage.py: deploy/'s RBAC,
pods as real processes, EndpointSlices, Chaos Mesh); the endpoint under load is a local
cluster reached as through a port-forward. Counts every request the API server saw from the
moment the run's process started until it ended, and divides by that wall time (pytest's
start-up included: the same for every build measured). LIST and watch requests are told
apart by the `watch` query. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inferchaos.targets.local import ClusterSpec, LocalCluster  # noqa: E402
from tests.support.inner import PYTEST  # noqa: E402
from tests.support.kubestage import REPO, kube_args, staged_kube  # noqa: E402


def kind_of(method: str, path: str, query: dict[str, str]) -> str:
    """list (a collection), watch, get (one object or its subresource) or mutate."""
    if method != "GET":
        return "mutate"
    if query.get("watch") in ("true", "1"):
        return "watch"
    parts = path.strip("/").split("/")
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    if len(rest) >= 3 and rest[0] == "namespaces":
        rest = rest[2:]
    return "list" if len(rest) == 1 else "get"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="experiments/test_replica_hang.py")
    parser.add_argument("--hold-s", type=float, default=12.0, help="the fault's hold (the run's longest phase)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, \
            LocalCluster(ClusterSpec(replicas=3, provisioning_delay_s=0.5)) as endpoint, \
            staged_kube(Path(tmp)) as fake:
        argv = [*PYTEST, "-q", "-p", "no:cacheprovider", args.experiment,
                *kube_args(fake, endpoint, Path(tmp)), "--slo-set", f"hold_s={args.hold_s:g}"]
        env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "KUBERNETES_SERVICE_HOST")}
        fake.clear_requests()
        t0 = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
        wall = time.monotonic() - t0
        seen = fake.requests()
    verdict = (proc.stdout.strip().splitlines() or ["?"])[-1]
    kinds = collections.Counter(kind_of(r.method, r.path, r.query) for r in seen)
    lists = collections.Counter(r.path.rstrip("/").rsplit("/", 1)[-1] for r in seen
                                if kind_of(r.method, r.path, r.query) == "list")
    print(f"# {args.experiment}, hold {args.hold_s:g} s, on {platform.node()} ({os.cpu_count()} CPUs): {verdict}")
    print(f"run wall {wall:.1f} s, {len(seen)} requests, {len(seen) / wall:.2f} req/s")
    print(f"{'kind':<8} {'count':>6} {'per s':>7}")
    for kind in ("list", "watch", "get", "mutate"):
        print(f"{kind:<8} {kinds[kind]:>6} {kinds[kind] / wall:>7.2f}")
    print("LISTs by resource: " + ", ".join(f"{name} {n}" for name, n in lists.most_common()))


if __name__ == "__main__":
    main()
