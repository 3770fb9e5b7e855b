"""SIGKILL the pytest runner while a fault is applied; `inferchaos recover` restores all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from inferchaos.faults.ledger import Ledger
from inferchaos.targets.local import ClusterSpec, LocalCluster
from tests.support.waiting import wait_for
from inferchaos.targets.local.control import read_desired
from inferchaos.targets.local.processes import group_alive, stopped
from tests.support.inner import PYTEST
from tests.support.leftovers import assert_nothing_left

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]

INNER = """
from inferchaos.faults.specs.spot_reclamation import spot_reclamation

def test_spot_held_long(run_experiment, target):
    # A provisioning delay of 10 minutes: without recover, the slot would stay empty.
    run_experiment(spot_reclamation.on(target, notice_s=1.0, provisioning_delay_s=600.0))
"""


def test_recover_after_the_runner_is_sigkilled_mid_fault(tmp_path):
    state_dir, ledger_path = tmp_path / "cluster", tmp_path / "ledger.jsonl"
    cluster = LocalCluster(ClusterSpec(replicas=3, provisioning_delay_s=1.0), state_dir).start()
    try:
        (tmp_path / "inner").mkdir()
        (tmp_path / "inner" / "test_inner.py").write_text(INNER)
        runner = subprocess.Popen(
            [*PYTEST, "-q", "--rootdir", str(tmp_path / "inner"), str(tmp_path / "inner"),
             "--state-dir", str(state_dir), "--ledger", str(ledger_path), "--chaos-report", str(tmp_path / "rep"),
             "--slo-set", "baseline_s=1", "--slo-set", "hold_s=120"],
            cwd=tmp_path / "inner", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        ledger = Ledger(ledger_path)
        wait_for(lambda: {"spot_reclamation", "load"} <= {e.fault for e in ledger.open_entries()}
                 and read_desired(state_dir).get("provisioning_delay_s") == 600.0
                 and len(cluster.replicas()) == 2, 90, "the fault applied and a replica reclaimed")
        (load,) = [e for e in ledger.open_entries() if e.fault == "load"]
        (locust_group,) = [u.args["pgid"] for u in load.undo if u.op == "end_group"]
        os.killpg(runner.pid, signal.SIGKILL)
        runner.wait()
        # locust outlives its SIGKILLed runner by up to a second (then its dead man's switch
        # stops it): recover must end it either way

        res = subprocess.run([sys.executable, "-m", "inferchaos.cli", "recover", "--ledger", str(ledger_path)],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert "spot_reclamation" in res.stdout and "load" in res.stdout

        assert ledger.open_entries() == []
        assert read_desired(state_dir) == {}
        assert not group_alive(locust_group), "the load generator must be gone"
        wait_for(lambda: len(cluster.replicas()) == 3 and all(r.phase == "ready" for r in cluster.replicas())
                 and all(s.up for s in cluster.lb_servers()), 60, "3 replicas ready and up in the LB")
        assert not any(stopped(r.pid) for r in cluster.replicas())
        r = httpx.post(f"{cluster.lb_url}/v2/models/mlp/infer", timeout=10, json={
            "inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": [0.0] * 16}]})
        assert r.status_code == 200
        again = subprocess.run([sys.executable, "-m", "inferchaos.cli", "recover", "--ledger", str(ledger_path)],
                               capture_output=True, text=True, timeout=60)
        assert again.returncode == 0 and "nothing to recover" in again.stdout
    finally:
        # Whatever failed above, leave nothing: the same recovery a person would run.
        subprocess.run([sys.executable, "-m", "inferchaos.cli", "recover", "--force", "--ledger", str(ledger_path)],
                       capture_output=True, timeout=60)
        cluster.stop()
    assert_nothing_left(state_dir)
