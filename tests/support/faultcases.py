"""The fault catalogue as test data: how to build each fault for the shared test cluster,
how to see on the target that it took effect, and what a planted breach looks like.

Used by test_fault_catalogue.py (in-process) and by the runner script that
test_fault_recover.py SIGKILLs, so both act on exactly the same faults.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import httpx

from inferchaos.faults.base import Fault, RunContext
from inferchaos.faults.catalogue import lookup
from inferchaos.faults.ledger import Ledger
from inferchaos.load.runner import LoadProfile, LoadRunner
from inferchaos.targets.local.golden import check_answer, golden_set, infer_body
from inferchaos.targets.local import LocalCluster
from inferchaos.targets.local.control import read_desired
from inferchaos.targets.local.depproxy import ProxyControl, Toxics
from inferchaos.targets.local.processes import stopped
from inferchaos.targets.local.vgpu import VirtualDevice

INFER = {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]}

#: fault -> its parameters for the shared test cluster (the rest at the spec's defaults).
PARAMS: dict[str, dict] = {
    "spot_reclamation": {"notice_s": 1.0, "provisioning_delay_s": 600.0},
    "gpu_oom": {"leave": "0"},
    "cuda_errors": {"error": "oom"},
    "model_load_stall": {"stall_s": math.inf, "provisioning_delay_s": 0.2},
    "pipeline_lag": {"mode": "both", "read_latency_ms": 1000.0},
    "dependency_latency": {"dependency": "feature_store", "latency_ms": 300.0},
    "replica_crash": {"provisioning_delay_s": 600.0},
    "replica_hang": {},
    "replica_restart": {"grace_s": 5.0},
    "traffic_surge": {"factor": 3.0},
    "wrong_answers": {"sigma": 2.0},
    "autoscaled_surge": {"factor": 8.0, "target_waiting": 1.0, "max_replicas": 2},
}
BUILDERS: dict[str, Callable[[LocalCluster, Ledger], Fault]] = {
    name: (lambda c, l, name=name: lookup(name).on(c, ledger=l, **PARAMS[name])) for name in PARAMS}


def build(name: str, cluster: LocalCluster, ledger: Ledger, out_dir: Path) -> Fault:
    fault = BUILDERS[name](cluster, ledger)
    fault.run = RunContext(cluster.lb_url, out_dir, load=LoadProfile(users=2, spawn_rate=50.0), runner=LoadRunner)
    return fault


@dataclass(frozen=True)
class Planted:
    """A run of the fault's experiment with one objective set so that it must fail."""

    experiment: str
    select: str  # -k expression: one parametrisation
    slo_set: tuple[str, ...]
    breached: str
    #: the experiment is an expected failure on the reference cluster (pytest exits 0),
    #: its verdict still "fail" with `breached` named.
    xfail: bool = False


PLANTED = {
    "spot_reclamation": Planted("test_spot_reclamation.py", "spot", ("replacement_s=0.5",), "replacement_s"),
    "gpu_oom": Planted("test_gpu_oom.py", "sudden", ("availability=1",), "availability"),
    "cuda_errors": Planted("test_cuda_errors.py", "oom", ("availability=1",), "availability"),
    "model_load_stall": Planted("test_model_load_stall.py", "cold", ("cold_start_s=1",), "cold_start_s"),
    "pipeline_lag": Planted("test_pipeline_lag.py", "stop", ("freshness_s=1",), "freshness_s"),
    "dependency_latency": Planted("test_dependency_latency.py", "latency", ("p99_ms=150",), "p99_ms"),
    "replica_crash": Planted("test_replica_crash.py", "crash", ("replacement_s=0.5",), "replacement_s"),
    "replica_hang": Planted("test_replica_hang.py", "hang and not plain", ("failover_s=0.5",), "failover_s"),
    # a restart reloads the model: its slot cannot be back within 50 ms
    "replica_restart": Planted("test_replica_restart.py", "restart", ("replacement_s=0.05",), "replacement_s"),
    "traffic_surge": Planted("test_traffic_surge.py", "surge", ("queue_p99_ms=1",), "queue_p99_ms"),
    "wrong_answers": Planted("test_wrong_answers.py", "wrong", ("baseline_s=3",), "golden_pass_rate", xfail=True),
    # scaling from cold is an expected failure under an open-loop surge: pytest exits 0
    "autoscaled_surge": Planted("test_autoscaled_surge.py", "cold", ("scale_out_s=0.1",), "scale_out_s", xfail=True),
}


# ----------------------------------------------------------------------------- the target's state
def snapshot(cluster: LocalCluster) -> dict:
    """What "the cluster as before" means, read from the target itself."""
    cluster.wait_steady(90)
    state = cluster.state
    pids = {str(r.pid) for r in state.replicas}
    memory, foreign = {}, []
    for r in state.replicas:
        usage = VirtualDevice(state.vgpu_dir or "", r.device).usage()
        memory[r.device] = usage.used
        foreign += [k for k in usage.allocations if k.split("/", 1)[0] not in pids]
    pipeline = state.service("pipeline")
    return {
        "replicas": len(state.active()), "standby": len(state.standby()), "desired": read_desired(cluster.state_dir),
        # by amount, not by device: after a warm-pool run the replicas sit on other devices
        "memory": sorted(memory.values()), "foreign_allocations": foreign,
        "toxics": {name: route["toxics"] for name, route in ProxyControl(state.proxy_url or "").routes().items()},
        "pipeline_stopped": stopped(pipeline.pid),
        "stopped_replicas": [r.name for r in state.replicas if stopped(r.pid)],
        "wrong_replicas": [r.name for r in state.active() if not answers_right(r.port)],
        "lb_up": sorted(s.name for s in cluster.lb_servers() if s.up),
    }


CLEAN_TOXICS = Toxics().to_dict()


def clean_snapshot(cluster: LocalCluster) -> dict:
    """The snapshot a test starts from, checked free of what an earlier fault could leave."""
    snap = snapshot(cluster)
    assert snap["foreign_allocations"] == [] and not snap["pipeline_stopped"] and snap["wrong_replicas"] == []
    assert all(t == CLEAN_TOXICS for t in snap["toxics"].values())
    return snap
GOLDEN = golden_set()[0]


def answers_right(port: int) -> bool:
    """One golden case asked of one replica directly, judged by the canary's own check."""
    resp = httpx.post(f"http://127.0.0.1:{port}/v2/models/mlp/infer", json=infer_body(GOLDEN), timeout=10)
    return resp.status_code == 200 and check_answer(GOLDEN, resp.json()).ok


def store_feature_age(cluster: LocalCluster) -> float:
    body = httpx.get(f"{cluster.state.feature_store_url}/features/default", timeout=2).json()
    return float(body["age_s"])


def infer(url: str, timeout: float = 10.0) -> httpx.Response:
    return httpx.post(f"{url}/v2/models/mlp/infer", json=INFER, timeout=timeout)


def repo_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env["PYTHONUNBUFFERED"] = "1"
    return env
