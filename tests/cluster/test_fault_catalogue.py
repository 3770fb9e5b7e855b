"""Every fault of the catalogue on the real local cluster, three ways:

1. injected by hand: its effect is measured on the target (not assumed), and its revert
   leaves the cluster exactly as before (replicas, memory ledger, proxy routes, pipeline);
2. its experiment with one objective planted to fail: the run fails naming that SLO;
3. its runner SIGKILLed while the fault is applied: `inferchaos recover` restores all.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from inferchaos.faults.ledger import Ledger
from inferchaos.targets.local import LocalCluster
from tests.support.waiting import wait_for
from inferchaos.targets.local.depproxy import ProxyControl
from inferchaos.targets.local.processes import group_alive, stopped
from inferchaos.targets.local.vgpu import VirtualDevice
from tests.support.faultcases import (BUILDERS, PLANTED, answers_right, build, clean_snapshot, infer, repo_env,
                                      snapshot, store_feature_age)
from tests.support.leftovers import processes_mentioning
from tests.support.reportcheck import assert_experiment_reported
from tests.support.phases import short
from tests.support.inner import PYTEST

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
FAULTS = sorted(BUILDERS)
SHORT = short(hold_s=4)


@pytest.fixture(scope="module")
def cluster(standard_cluster: LocalCluster) -> LocalCluster:
    return standard_cluster


@pytest.fixture
def before(cluster: LocalCluster) -> dict:
    return clean_snapshot(cluster)


# ----------------------------------------------------------------------------- effects, measured
def effect_spot_reclamation(cluster: LocalCluster, fault) -> None:  # type: ignore[no-untyped-def]
    (victim,) = fault.victims
    wait_for(lambda: not group_alive(victim.pgid), 5, "the reclaimed replica gone after its notice")
    time.sleep(1.0)  # the provisioning delay is 600 s: the slot must stay empty
    assert len(cluster.state.active()) == 2


def effect_gpu_oom(cluster: LocalCluster, fault) -> None:  # type: ignore[no-untyped-def]
    (victim,) = fault.victims
    usage = VirtualDevice(cluster.state.vgpu_dir or "", victim.device).usage()
    assert usage.free == 0, f"the hog should leave nothing free on GPU {victim.device}: {usage}"
    assert any("gpu-hog" in k for k in usage.allocations)
    r = infer(f"http://127.0.0.1:{victim.port}")
    assert r.status_code == 500 and "CUDA out of memory" in r.text
    wait_for(lambda: not group_alive(victim.pgid), 10, "the OOMing replica to exit, as vLLM does")
    assert infer(cluster.lb_url).status_code == 200, "the other replicas keep serving"


def effect_cuda_errors(cluster: LocalCluster, fault) -> None:  # type: ignore[no-untyped-def]
    (victim,) = fault.victims
    assert "LD_PRELOAD" in Path(f"/proc/{victim.pid}/environ").read_text(), "restarted with the shim"
    r = infer(f"http://127.0.0.1:{victim.port}")
    assert r.status_code == 500 and "CUDA error: out of memory" in r.text, r.text
    wait_for(lambda: not group_alive(victim.pgid), 10, "the replica to exit on the CUDA OOM, as vLLM's engine does")
    assert infer(cluster.lb_url).status_code == 200, "the other replicas keep serving"


def effect_model_load_stall(cluster: LocalCluster, fault) -> None:  # type: ignore[no-untyped-def]
    (victim,) = fault.victims
    wait_for(lambda: not group_alive(victim.pgid), 5, "the crashed replica gone")
    slot = victim.slot
    new = wait_for(lambda: [r for r in cluster.state.replicas if r.slot == slot and r.name != victim.name], 10,
                   "its replacement started")[0]
    time.sleep(2.5)
    now = next(r for r in cluster.state.replicas if r.name == new.name)
    assert now.phase == "starting", "the replacement must not load its weights through a stalled store"
    assert ProxyControl(cluster.state.proxy_url or "").route("model_store")["stall_left_s"] == "inf"


def effect_pipeline_lag(cluster: LocalCluster, fault) -> None:  # type: ignore[no-untyped-def]
    wait_for(lambda: stopped(cluster.state.service("pipeline").pid), 2, "the pipeline stopped")
    time.sleep(2.5)
    assert store_feature_age(cluster) >= 2.0, "the store's newest features stop getting newer"
    # Every replica still answers; those that had features report them stale. (A replica
    # started after the previous test never read any: it answers without feature headers.)
    answers = [infer(f"http://127.0.0.1:{r.port}") for r in cluster.state.active()]
    assert all(a.status_code == 200 for a in answers), "stale, not down"
    ages = [float(a.headers["x-inferchaos-feature-age-s"]) for a in answers if a.headers["x-inferchaos-feature-age-s"]]
    assert ages and min(ages) >= 2.0, ages


def effect_dependency_latency(cluster: LocalCluster, fault) -> None:  # type: ignore[no-untyped-def]
    assert fault.measured["health_ms"] >= 300, fault.measured
    started = time.monotonic()
    r = httpx.get(f"{cluster.state.via_proxy['feature_store']}/features/default", timeout=5)
    assert r.status_code == 200 and time.monotonic() - started >= 0.3
    assert infer(cluster.lb_url).status_code == 200, "the feature timeout and fallback keep answers coming"


def effect_replica_crash(cluster: LocalCluster, fault) -> None:  # type: ignore[no-untyped-def]
    (victim,) = fault.victims
    wait_for(lambda: not group_alive(victim.pgid), 2, "the SIGKILLed replica gone")
    wait_for(lambda: len(cluster.state.active()) == 2, 3, "the supervisor to see it dead")
    time.sleep(1.0)  # the provisioning delay is 600 s: the slot must stay empty
    assert len(cluster.state.active()) == 2


def effect_replica_restart(cluster: LocalCluster, fault) -> None:  # type: ignore[no-untyped-def]
    (victim,) = fault.victims
    wait_for(lambda: not group_alive(victim.pgid), 7, "the restarted replica's old process gone after SIGTERM")
    assert fault.first("sigkill", victim.name) is None, "the reference server drains and exits on SIGTERM"
    new = wait_for(lambda: [r for r in cluster.state.replicas
                            if r.slot == victim.slot and r.name != victim.name and r.phase == "ready"], 30,
                   "the same slot serving again, with no provisioning delay")[0]
    assert infer(f"http://127.0.0.1:{new.port}").status_code == 200


def effect_replica_hang(cluster: LocalCluster, fault) -> None:  # type: ignore[no-untyped-def]
    (victim,) = fault.victims
    wait_for(lambda: stopped(victim.pid), 2, "the replica stopped (state T)")
    with pytest.raises(httpx.ReadTimeout):  # the socket accepts; nothing answers
        infer(f"http://127.0.0.1:{victim.port}", timeout=1.0)
    wait_for(lambda: any(s.name == f"r{victim.slot}" and not s.up for s in cluster.lb_servers()), 6,
             "the LB's health check to eject the hung replica")


def effect_wrong_answers(cluster: LocalCluster, fault) -> None:  # type: ignore[no-untyped-def]
    (victim,) = fault.victims
    assert all(infer(f"http://127.0.0.1:{r.port}").status_code == 200 for r in cluster.state.active()), "up"
    right = {r.name: answers_right(r.port) for r in cluster.state.active()}
    assert right == {name: name != victim.name for name in right}, right


def effect_autoscaled_surge(cluster: LocalCluster, fault) -> None:  # type: ignore[no-untyped-def]
    assert cluster.autoscaling()["enabled"] and len(cluster.replicas()) == 1, "scaled in to its minimum first"
    (surge,) = fault.load_runners()
    assert surge.running()
    wait_for(lambda: len(cluster.replicas()) == 2, 30, "the surge making the autoscaler add a replica")
    assert cluster.autoscaling()["decisions"][-1]["to"] == 2


def effect_traffic_surge(cluster: LocalCluster, fault) -> None:  # type: ignore[no-untyped-def]
    (surge,) = fault.load_runners()
    assert surge.running()
    tail = surge.tail()
    wait_for(lambda: len(tail.read_new()) > 0 or None, 5, "surge requests")


EFFECTS = {name: globals()[f"effect_{name}"] for name in FAULTS}


@pytest.mark.parametrize("name", FAULTS)
def test_injection_takes_effect_and_revert_restores(name: str, cluster: LocalCluster, before: dict,
                                                     tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl")
    fault = build(name, cluster, ledger, tmp_path)
    try:
        fault.prepare()
        fault.inject()
        assert [e.fault for e in ledger.open_entries()] == [name], "journalled before it took effect"
        EFFECTS[name](cluster, fault)
    finally:
        fault.revert()
    assert ledger.open_entries() == []
    assert snapshot(cluster) == before
    fault.revert()  # idempotent
    assert ledger.open_entries() == []


# ----------------------------------------------------------------------------- planted breaches
@pytest.mark.parametrize("name", FAULTS)
def test_planted_breach_fails_naming_the_slo(name: str, cluster: LocalCluster, before: dict,
                                             tmp_path: Path) -> None:
    plant = PLANTED[name]
    argv = [*PYTEST, f"experiments/{plant.experiment}", "-k", plant.select, "--state-dir", str(cluster.state_dir),
            "--ledger", str(tmp_path / "ledger.jsonl"), "--chaos-report", str(tmp_path / "report"),
            "--alluredir", str(tmp_path / "allure")]
    for kv in SHORT + plant.slo_set:
        argv += ["--slo-set", kv]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=180, cwd=REPO, env=repo_env())
    out = proc.stdout + proc.stderr
    assert proc.returncode == (0 if plant.xfail else 1), out[-3000:]
    (exp,) = json.loads((tmp_path / "report" / "summary.json").read_text())["experiments"]
    assert exp["fault"] == name and exp["verdict"] == "fail", exp
    breached = {s["name"] for s in exp["slos"] if not s["ok"]}
    assert plant.breached in breached, exp["slos"]
    assert f"BREACHED {plant.breached} " in out, out[-3000:]
    if name == "wrong_answers":  # up, every answer a 200, and wrong: the golden set and drift must say so
        slos = {s["name"]: s for s in exp["slos"]}
        assert slos["availability"]["ok"] and slos["p99_ms"]["ok"]
        assert "golden_pass_rate" in breached and breached & {"prediction_psi", "prediction_ks_pvalue"}, breached
        victim = exp["model_health"]["golden"]["examples"][0]
        assert "(replica replica-" in victim, exp["model_health"]
        assert "xfailed" in out
    if name == "pipeline_lag":  # up, every answer a 200, and stale: the suite must say so
        slos = {s["name"]: s for s in exp["slos"]}
        assert slos["availability"]["ok"] and slos["availability"]["observed"] == 1.0
        assert breached == {"freshness_s"}
        assert "up but serving stale answers" in out
    assert Ledger(tmp_path / "ledger.jsonl").open_entries() == []
    assert snapshot(cluster) == before
    # Reported: every phase a step, the breached SLO a failed step, the five attachments,
    # and the timeline's fault band where the ledger says the fault was.
    result = assert_experiment_reported(tmp_path / "allure", exp, tmp_path / "ledger.jsonl")
    assert result["status"] == ("skipped" if plant.xfail else "failed")  # Allure shows an xfail as skipped
    assert plant.breached in result["statusDetails"]["message"]


# ----------------------------------------------------------------------------- recover after SIGKILL
RUNNER = """
import sys, time
from pathlib import Path
from inferchaos.faults.ledger import Ledger
from inferchaos.targets.local import LocalCluster
from tests.support.faultcases import build

cluster = LocalCluster.attach(sys.argv[1])
fault = build(sys.argv[3], cluster, Ledger(sys.argv[2]), Path(sys.argv[4]))
fault.prepare()
fault.inject()
print("injected", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("name", FAULTS)
def test_recover_undoes_it_after_the_runner_is_sigkilled(name: str, cluster: LocalCluster, before: dict,
                                                        tmp_path: Path) -> None:
    ledger_path = tmp_path / "ledger.jsonl"
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, str(cluster.state_dir), str(ledger_path), name,
                               str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=REPO, env=repo_env())
    try:
        assert runner.stdout is not None
        assert runner.stdout.readline().strip() == "injected", "the runner did not inject"
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait()
        assert [e.fault for e in Ledger(ledger_path).open_entries()] == [name]
        res = subprocess.run([sys.executable, "-m", "inferchaos.cli", "recover", "--ledger", str(ledger_path)],
                             capture_output=True, text=True, timeout=60, cwd=REPO)
        assert res.returncode == 0, res.stdout + res.stderr
        assert name in res.stdout
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    assert Ledger(ledger_path).open_entries() == []
    assert snapshot(cluster) == before
    assert processes_mentioning("inferchaos.faults.gpu_hog") == [] and processes_mentioning(str(tmp_path)) == []
    assert processes_mentioning(f"--host {cluster.lb_url}") == [], "no load generator left"
