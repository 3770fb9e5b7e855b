"""Crash safety: the real experiment runner SIGKILLed at a random moment, then
`inferchaos recover`, and the cluster must be exactly as before.

One kill per fault of the catalogue, each in a stage drawn from a seed (every stage —
prepare, baseline, inject, hold, revert, recovery — is hit at least once per run). The
seed is random unless INFERCHAOS_CRASH_SEED is set, and every failure names it:

    INFERCHAOS_CRASH_SEED=1234 pytest tests/cluster/test_crash_safety.py

Many more kills, with a table: `python bench/crash_campaign.py --kills 30`.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from inferchaos.targets.local import ClusterSpec, LocalCluster
from tests.support.crashcycle import FAULTS, PHASES, Kill, plan_kills, recover, run_cycle
from tests.support.faultcases import CLEAN_TOXICS, snapshot
from tests.support.leftovers import module_cluster

pytestmark = pytest.mark.cluster

SEED = int(os.environ.get("INFERCHAOS_CRASH_SEED") or random.SystemRandom().randrange(1_000_000))
KILLS = {k.fault: k for k in plan_kills(SEED, len(FAULTS))}
REPLAY = f"replay with INFERCHAOS_CRASH_SEED={SEED} pytest tests/cluster/test_crash_safety.py"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    yield from module_cluster(tmp_path_factory, "crash",
                              ClusterSpec(replicas=3, provisioning_delay_s=0.5), owner_pid=os.getpid())


@pytest.fixture
def clean(cluster: LocalCluster) -> LocalCluster:
    snap = snapshot(cluster)
    assert snap["foreign_allocations"] == [] and not snap["pipeline_stopped"] and snap["wrong_replicas"] == []
    assert all(t == CLEAN_TOXICS for t in snap["toxics"].values()) and snap["desired"] == {}, snap
    return cluster


def test_the_seed_aims_at_every_stage_and_every_fault() -> None:
    assert sorted(KILLS) == sorted(FAULTS)
    assert {k.phase for k in KILLS.values()} == set(PHASES), f"seed {SEED}: {KILLS}"
    assert plan_kills(SEED, len(FAULTS)) == list(plan_kills(SEED, len(FAULTS))), "a seed replays the same kills"


@pytest.mark.parametrize("fault", FAULTS)
def test_recover_restores_the_cluster_after_the_runner_is_sigkilled(fault: str, clean: LocalCluster,
                                                                    tmp_path: Path) -> None:
    kill = KILLS[fault]
    out = run_cycle(clean, kill, tmp_path)
    print(f"seed {SEED}: {kill.label()}: killed in {out.killed_in}, recover {out.recover_s} s, "
          f"restored after {out.restored_s} s")
    assert out.killed, f"seed {SEED}: the runner ended before the kill ({REPLAY})\n{out.report()}"
    assert out.restored, f"seed {SEED}: not restored ({REPLAY})\n{out.report()}"


def test_the_checks_see_what_a_crash_leaves_without_recover(clean: LocalCluster, tmp_path: Path) -> None:
    """The same cycle with recover left out must report the hung replica, the open
    ledger and the orphaned load generator: the campaign's checks can fail."""
    out = run_cycle(clean, Kill("replica_hang", "hold", 0.3, "hang"), tmp_path, do_recover=False)
    try:
        assert out.killed and out.killed_in == "hold", out.report()
        text = "\n".join(out.problems)
        assert "ledger entries still open: " in text and "replica_hang" in text and "load" in text, text
        assert "SIGSTOPped" in text, text
        assert "locust" in text, text
    finally:
        res = recover(tmp_path / "ledger.jsonl")
    assert res.returncode == 0, res.stdout + res.stderr
