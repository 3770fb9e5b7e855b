"""cuda_errors on real local clusters, end to end: what the client sees, what becomes of
the replica, what the LB does, and the verdict.

Two servers: the reference server as the cluster starts it (dies on a CUDA error, as
vLLM's engine does), and a `--replica-cmd` server started through a shell, which catches
the out-of-memory and stays up (`--oom reject`): its health check stays green, so the LB
keeps sending it requests it fails. Expectations come from what the servers and HAProxy
answer, never from the fault's own bookkeeping.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from inferchaos.ground import native
from inferchaos.engine import Experiment
from inferchaos.faults.base import Fault
from inferchaos.faults.specs.cuda_errors import cuda_errors
from inferchaos.faults.ledger import Ledger
from inferchaos.probes.slo import load_slo
from inferchaos.progress import Progress
from inferchaos.targets.local import ClusterSpec, LocalCluster
from tests.support.waiting import wait_for
from inferchaos.targets.local.processes import group_alive
from tests.support.faultcases import infer, snapshot
from tests.support.leftovers import module_cluster
from tests.support.phases import short

pytestmark = pytest.mark.cluster

#: the experiment's own load and hold (100 req/s for 6 s: the few requests a dying replica
#: fails are judged against as many as users send), with shorter quiet phases around them
SHORT = short(baseline_s=2, hold_s=None, recovery_window_s=4)  # the experiment's own hold


def shell_cmd() -> str:
    """The reference server as a third party's command: under a shell that stays its parent
    (`; exit $?` keeps sh from exec'ing it), so the preload must reach a grandchild, as it
    must reach vLLM's engine-core process; and it rejects on OOM instead of dying."""
    server = (f"{sys.executable} -m inferchaos.targets.local.server --port {{port}} --name {{name}} "
              "--model-store {model_store} --feature-store {feature_store} --vgpu-dir {vgpu_dir} --device {device} "
              f"--oom reject --cudart {native.path('cudart')}")
    return f"sh -c '{server}; exit $?'"


@pytest.fixture(scope="module")
def dies(standard_cluster: LocalCluster) -> LocalCluster:
    return standard_cluster


@pytest.fixture(scope="module")
def rejects(tmp_path_factory: pytest.TempPathFactory):
    yield from module_cluster(tmp_path_factory, "cuda-reject",
                              ClusterSpec(replicas=3, provisioning_delay_s=0.5, replica_cmd=shell_cmd()))


def run(cluster: LocalCluster, fault: Fault, tmp: Path, *slo_set: str):  # type: ignore[no-untyped-def]
    ledger = Ledger(tmp / "ledger.jsonl")
    fault.ledger, fault.experiment = ledger, fault.name
    lines: list[str] = []
    result = Experiment(fault.name, cluster, fault, load_slo(None, fault.name, SHORT + slo_set), tmp / "run", ledger,
                        Progress(lines.append)).run()
    return result, ledger, lines


def shell_snapshot(cluster: LocalCluster) -> dict:
    """`snapshot`, for servers under a shell: their memory belongs to the shell's child, not
    to the replica's pid, so the owners are counted (one per replica), not named."""
    snap = snapshot(cluster)
    snap["foreign_allocations"] = len(snap["foreign_allocations"])
    return snap


def slot_up(cluster: LocalCluster, slot: int | None) -> bool:
    return any(s.name == f"r{slot}" and s.up for s in cluster.lb_servers())


# ------------------------------------------------------------------ the server that dies
@pytest.mark.parametrize("error, says", [("oom", "CUDA error: out of memory"),
                                         ("illegal_address", "CUDA error: an illegal memory access was encountered"),
                                         ("ecc", "CUDA error: uncorrectable ECC error encountered")])
def test_the_reference_server_dies_on_it_and_its_gpu_crash_loops_until_revert(dies, tmp_path, error, says):
    before = snapshot(dies)
    fault = cuda_errors.on(dies, ledger=Ledger(tmp_path / "ledger.jsonl"), error=error)
    try:
        fault.prepare()
        (victim,) = fault.victims
        assert infer(f"http://127.0.0.1:{victim.port}").status_code == 200, "the shim is inert until armed"
        fault.inject()
        r = infer(f"http://127.0.0.1:{victim.port}")
        assert r.status_code == 500 and says in r.text, r.text
        wait_for(lambda: not group_alive(victim.pgid), 10, "the replica to exit")
        wait_for(lambda: not slot_up(dies, victim.slot), 10, "the LB to take its slot out")
        assert all(infer(dies.lb_url).status_code == 200 for _ in range(10)), "the others serve"
        # a replacement on the same faulty GPU fails its warm-up and never gets traffic
        again = wait_for(lambda: [r for r in dies.state.history if r.device == victim.device
                                  and r.started_at > victim.started_at], 15, "a replacement on that GPU to fail")
        assert says in Path(again[0].log).read_text()
    finally:
        fault.revert()
    assert Ledger(tmp_path / "ledger.jsonl").open_entries() == []
    assert snapshot(dies) == before, "a replacement without the shim serves again"
    fresh = next(r for r in dies.state.active() if r.slot == victim.slot)
    assert "LD_PRELOAD" not in Path(f"/proc/{fresh.pid}/environ").read_text(), "nothing of the fault is left"


def test_the_experiment_passes_where_the_server_dies_and_the_lb_fails_over(dies, tmp_path):
    result, ledger, _ = run(dies, cuda_errors.on(dies), tmp_path)
    assert result.landing and result.landing["landed"], result.landing
    assert "returned out of memory (2)" in result.landing["evidence"]
    assert result.verdict == "pass", result.failure_message()
    assert ledger.open_entries() == []


def test_a_planted_breach_fails_naming_the_slo(dies, tmp_path):
    result, _, _ = run(dies, cuda_errors.on(dies), tmp_path, "availability=1")
    assert result.verdict == "fail"
    assert [s.name for s in result.slos if not s.ok] == ["availability"], result.failure_message()


# ------------------------------------------------------------------ the server that rejects
def test_a_server_that_rejects_stays_in_rotation_failing_and_heals_in_the_same_process(rejects, tmp_path):
    before = shell_snapshot(rejects)
    assert before["foreign_allocations"] == 3
    fault = cuda_errors.on(rejects, ledger=Ledger(tmp_path / "ledger.jsonl"), error="oom")
    try:
        fault.prepare()
        (victim,) = fault.victims
        shimmed = [int(p.name.rsplit(".", 1)[1]) for p in Path(rejects.state_dir, "cuda").glob("*.status.*")]
        assert any(pid != victim.pid for pid in shimmed), "the shim reached the server under the shell"
        fault.inject()
        answers = [infer(f"http://127.0.0.1:{victim.port}") for _ in range(5)]
        assert all(a.status_code == 500 and "CUDA error: out of memory" in a.text for a in answers), answers
        assert group_alive(victim.pgid), "rejects, stays up"
        assert httpx.get(f"http://127.0.0.1:{victim.port}/v2/health/ready", timeout=5).status_code == 200
        assert slot_up(rejects, victim.slot), "its health check is green: the LB keeps it"
        via_lb = [infer(rejects.lb_url).status_code for _ in range(30)]
        assert 500 in via_lb and 200 in via_lb, via_lb
    finally:
        fault.revert()
    r = wait_for(lambda: (r := infer(f"http://127.0.0.1:{victim.port}")).status_code == 200 and r, 5,
                 "the same process to allocate again")
    assert r.headers["x-inferchaos-replica"] == victim.name and group_alive(victim.pgid)
    assert shell_snapshot(rejects) == before


def test_a_lost_context_ends_even_a_server_that_rejects(rejects, tmp_path):
    fault = cuda_errors.on(rejects, ledger=Ledger(tmp_path / "ledger.jsonl"), error="illegal_address")
    try:
        fault.prepare()
        (victim,) = fault.victims
        fault.inject()
        r = infer(f"http://127.0.0.1:{victim.port}")
        assert r.status_code == 500 and "illegal memory access" in r.text
        wait_for(lambda: not group_alive(victim.pgid), 10, "the replica to exit: no process survives a lost context")
    finally:
        fault.revert()
    rejects.wait_steady(60)


def test_the_experiment_fails_where_the_server_rejects_and_nothing_notices(rejects, tmp_path):
    """Not a planted objective: the default SLOs, and a server whose health check cannot
    see its CUDA errors. The LB keeps routing to it, so availability breaks."""
    result, ledger, _ = run(rejects, cuda_errors.on(rejects), tmp_path)
    assert result.landing and result.landing["landed"], result.landing
    assert result.verdict == "fail", result.failure_message()
    assert "availability" in {s.name for s in result.slos if not s.ok}, result.failure_message()
    assert ledger.open_entries() == []


def test_without_a_compiler_it_is_one_line_exit_2_and_nothing_is_touched(dies, tmp_path):
    before = snapshot(dies)
    env = {**os.environ, "CC": "/nonexistent/cc", "INFERCHAOS_NATIVE_DIR": str(tmp_path / "native")}
    res = subprocess.run([sys.executable, "-m", "inferchaos.cli", "inject", "cuda_errors", "--state-dir",
                          str(dies.state_dir), "--ledger", str(tmp_path / "ledger.jsonl")],
                         capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.strip().splitlines() == ["inferchaos: error: CC=/nonexistent/cc: no such compiler (the "
                                               "cuda_errors fault builds its shim with it)"], res.stderr
    assert Ledger(tmp_path / "ledger.jsonl").open_entries() == []
    assert snapshot(dies) == before
