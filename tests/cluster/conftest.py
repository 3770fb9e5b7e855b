"""The cluster tier's shared local cluster.

Starting a cluster (HAProxy, three replicas, the stores, the pipeline) costs seconds; the
modules that need the standard one (three replicas, provisioning 0.5 s) share one for the
session. Each module gets it only once it is back to clean, checked from the target itself
(tests/support/faultcases.snapshot): whatever the module before it did is undone, or the next
module fails at once naming what was left, instead of failing later for a reason not its own.
Modules that need another shape (one replica, a replica command of their own) keep their own."""

from __future__ import annotations

import pytest

from inferchaos.targets.local import ClusterSpec, LocalCluster
from tests.support.faultcases import CLEAN_TOXICS, snapshot
from tests.support.leftovers import module_cluster

STANDARD = ClusterSpec(replicas=3, provisioning_delay_s=0.5)


def left_over(snap: dict) -> list[str]:
    """What of a module's faults is still on the cluster (empty: clean)."""
    problems = []
    if snap["replicas"] != STANDARD.replicas:
        problems.append(f"{snap['replicas']} replicas active, not {STANDARD.replicas}")
    if snap["desired"]:
        problems.append(f"runtime settings still changed: {snap['desired']}")
    if any(t != CLEAN_TOXICS for t in snap["toxics"].values()):
        problems.append(f"dependency toxics still set: {snap['toxics']}")
    for key in ("foreign_allocations", "stopped_replicas", "wrong_replicas"):
        if snap[key]:
            problems.append(f"{key}: {snap[key]}")
    if snap["pipeline_stopped"]:
        problems.append("the feature pipeline is stopped")
    if len(snap["lb_up"]) != STANDARD.replicas:
        problems.append(f"LB servers up: {snap['lb_up']}")
    return problems


@pytest.fixture(scope="session")
def _standard_cluster(tmp_path_factory: pytest.TempPathFactory):
    yield from module_cluster(tmp_path_factory, "standard", STANDARD)


@pytest.fixture(scope="module")
def standard_cluster(_standard_cluster: LocalCluster) -> LocalCluster:
    """The shared standard cluster, checked clean before the module uses it."""
    problems = left_over(snapshot(_standard_cluster))
    assert not problems, "the shared cluster was left dirty by an earlier module: " + "; ".join(problems)
    return _standard_cluster
