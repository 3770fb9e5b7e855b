"""How fast each fault bites and how fast its revert puts the cluster back.

    python bench/fault_latency.py [--rounds 1] [--faults gpu_oom,replica_hang] [--replicas 3]

Per fault of the catalogue (built as tests/support/faultcases.py builds them, on one local cluster,
no load): inject-to-effect, from the call to `fault.inject()` until its effect is observable
on the target (the catalogue's effect checks, as a condition polled every 10 ms), with how
long `inject()` itself took; for faults that take a replica out, until HAProxy stopped
routing to it too; and revert-to-restored, from the call to `fault.revert()` until
`snapshot(cluster)` equals the snapshot taken before (the replica replaced and ready, memory,
proxy routes, pipeline, LB view). With --rounds N each figure is the median of N.
Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inferchaos.faults.ledger import Ledger  # noqa: E402
from inferchaos.targets.local import ClusterSpec, LocalCluster  # noqa: E402
from inferchaos.targets.local.depproxy import ProxyControl  # noqa: E402
from inferchaos.targets.local.processes import group_alive, stopped  # noqa: E402
from inferchaos.targets.local.vgpu import VirtualDevice  # noqa: E402
from tests.support.faultcases import BUILDERS, answers_right, build, infer, snapshot  # noqa: E402

POLL_S = 0.01
EFFECT_TIMEOUT_S = 30.0
RESTORE_TIMEOUT_S = 90.0


def _victim(fault):  # type: ignore[no-untyped-def]
    (v,) = fault.victims
    return v


def _gone(fault) -> bool:  # type: ignore[no-untyped-def]
    return not group_alive(_victim(fault).pgid)


def _oomed(cluster: LocalCluster, fault) -> bool:  # type: ignore[no-untyped-def]
    v = _victim(fault)
    if VirtualDevice(cluster.state.vgpu_dir or "", v.device).usage().free != 0:
        return False
    if not group_alive(v.pgid):
        return True
    try:  # a batch must try to allocate to fail, as on a GPU
        r = infer(f"http://127.0.0.1:{v.port}", timeout=2)
    except httpx.HTTPError:
        return not group_alive(v.pgid)
    return r.status_code == 500 and "CUDA out of memory" in r.text


def _stalled_replacement(cluster: LocalCluster, fault) -> bool:  # type: ignore[no-untyped-def]
    v = _victim(fault)
    if group_alive(v.pgid):
        return False
    new = [r for r in cluster.state.replicas if r.slot == v.slot and r.name != v.name]
    stall = ProxyControl(cluster.state.proxy_url or "").route("model_store")["stall_left_s"]
    return bool(new) and new[0].phase == "starting" and stall == "inf"


def _pipeline_lag(cluster: LocalCluster, fault) -> bool:  # type: ignore[no-untyped-def]
    if not stopped(cluster.state.service("pipeline").pid):
        return False
    t0 = time.monotonic()
    httpx.get(f"{cluster.state.via_proxy['feature_store']}/features/default", timeout=5)
    return time.monotonic() - t0 >= 1.0


def _slow_dependency(cluster: LocalCluster, fault) -> bool:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    httpx.get(f"{cluster.state.via_proxy['feature_store']}/features/default", timeout=5)
    return time.monotonic() - t0 >= 0.3


def _crashed(cluster: LocalCluster, fault) -> bool:  # type: ignore[no-untyped-def]
    return _gone(fault) and len(cluster.state.active()) == 2


def _wrong(cluster: LocalCluster, fault) -> bool:  # type: ignore[no-untyped-def]
    return not answers_right(_victim(fault).port)


def _surging(cluster: LocalCluster, fault) -> bool:  # type: ignore[no-untyped-def]
    (surge,) = fault.load_runners()
    if not hasattr(fault, "_bench_tail"):
        fault._bench_tail = surge.tail()
    return surge.running() and len(fault._bench_tail.read_new()) > 0


def _cuda_failing(cluster: LocalCluster, fault) -> bool:  # type: ignore[no-untyped-def]
    v = _victim(fault)
    if not group_alive(v.pgid):
        return True
    try:  # a batch must make its CUDA calls to fail
        r = infer(f"http://127.0.0.1:{v.port}", timeout=2)
    except httpx.HTTPError:
        return not group_alive(v.pgid)
    return r.status_code == 500 and "CUDA error" in r.text


EFFECTS: dict[str, tuple[str, Callable]] = {
    "cuda_errors": ("the replica's CUDA calls fail (its answer is a CUDA error, or it has exited)", _cuda_failing),
    "spot_reclamation": ("the reclaimed replica gone after its notice", lambda c, f: _gone(f)),
    "gpu_oom": ("no memory free on its GPU and the replica failing with CUDA OOM", _oomed),
    "model_load_stall": ("replica crashed, its replacement stuck loading through the stalled store",
                         _stalled_replacement),
    "pipeline_lag": ("pipeline stopped and feature reads >= 1 s", _pipeline_lag),
    "dependency_latency": ("feature-store reads through the proxy >= 300 ms", _slow_dependency),
    "replica_crash": ("replica gone and the supervisor sees 2 active", _crashed),
    "replica_hang": ("replica stopped (state T)", lambda c, f: stopped(_victim(f).pid)),
    "traffic_surge": ("the surge's requests arriving", _surging),
    "wrong_answers": ("the replica fails the golden check", _wrong),
}


def lb_out(cluster: LocalCluster, fault) -> bool:  # type: ignore[no-untyped-def]
    """HAProxy itself (its admin socket, every slot) no longer routes to the victim's slot."""
    slot = f"r{_victim(fault).slot}"
    return any(s.name == slot and not s.up for s in cluster.admin().servers())


def one(cluster: LocalCluster, name: str, work: Path) -> dict:
    before = snapshot(cluster)
    fault = build(name, cluster, Ledger(work / "ledger.jsonl"), work)
    effect = EFFECTS[name][1]
    res: dict = {"fault": name, "inject_call_s": None, "effect_s": None, "lb_out_s": None, "restored_s": None}
    try:
        fault.prepare()
        t0 = time.monotonic()
        fault.inject()
        res["inject_call_s"] = time.monotonic() - t0
        takes_replica = name in ("spot_reclamation", "gpu_oom", "cuda_errors", "model_load_stall", "replica_crash",
                                 "replica_hang")
        deadline = time.monotonic() + EFFECT_TIMEOUT_S
        while time.monotonic() < deadline and (res["effect_s"] is None or (takes_replica and res["lb_out_s"] is None)):
            if res["effect_s"] is None and effect(cluster, fault):
                res["effect_s"] = time.monotonic() - t0
            if takes_replica and res["lb_out_s"] is None and lb_out(cluster, fault):
                res["lb_out_s"] = time.monotonic() - t0
            time.sleep(POLL_S)
    finally:
        t1 = time.monotonic()
        fault.revert()
        res["revert_call_s"] = time.monotonic() - t1
    deadline = time.monotonic() + RESTORE_TIMEOUT_S
    while time.monotonic() < deadline:
        if cluster.unsteady() is None and snapshot(cluster) == before:
            res["restored_s"] = time.monotonic() - t1
            break
        time.sleep(POLL_S)
    return res


def _med(values: list) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    s = f"{statistics.median(vals):.2f}"
    return s if len(vals) == len(values) else s + f" ({len(values) - len(vals)} never)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--faults", default=",".join(sorted(BUILDERS)))
    ap.add_argument("--replicas", type=int, default=3)
    a = ap.parse_args()
    faults = [f for f in a.faults.split(",") if f]
    if set(faults) - set(BUILDERS):
        print(f"fault_latency: error: unknown fault(s) {sorted(set(faults) - set(BUILDERS))}", file=sys.stderr)
        return 2
    print("command:", " ".join(shlex.quote(x) for x in [os.path.relpath(sys.executable)] + sys.argv))
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.2f} at start")
    results: dict[str, list[dict]] = {f: [] for f in faults}
    with tempfile.TemporaryDirectory(prefix="inferchaos-latency-") as tmp:
        spec = ClusterSpec(replicas=a.replicas, provisioning_delay_s=0.5)
        with LocalCluster(spec, Path(tmp) / "cluster", owner_pid=os.getpid()) as cluster:
            print(f"target: local cluster, {a.replicas} replicas, provisioning delay 0.5 s, no load; faults as "
                  "tests/support/faultcases.py builds them")
            for i in range(a.rounds):
                for name in faults:
                    work = Path(tmp) / f"{name}-{i}"
                    work.mkdir()
                    results[name].append(one(cluster, name, work))
    print(f"\n{'fault':<20} {'inject() s':>10} {'to effect s':>12} {'LB out s':>9} {'revert() s':>10} "
          f"{'to restored s':>14}  effect observed")
    for name in faults:
        rs = results[name]
        print(f"{name:<20} {_med([r['inject_call_s'] for r in rs]):>10} {_med([r['effect_s'] for r in rs]):>12} "
              f"{_med([r['lb_out_s'] for r in rs]):>9} {_med([r['revert_call_s'] for r in rs]):>10} "
              f"{_med([r['restored_s'] for r in rs]):>14}  {EFFECTS[name][0]}")
    print(f"rounds={a.rounds}; times from the inject()/revert() call; medians; "
          f"load average {os.getloadavg()[0]:.2f} at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
