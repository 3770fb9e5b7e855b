"""Replica restart: one replica restarted gracefully in place under load (SIGTERM, drain,
a new process in the same slot) -- what a rollout, a config reload or a liveness kill does.

Graceful means: a planned restart costs users nothing (availability), the LB stops sending
to the draining replica within seconds (failover_s), and the slot serves again soon after.
"""

import pytest

from inferchaos.faults.specs.replica_restart import replica_restart


@pytest.mark.replica_restart
@pytest.mark.chaos(runbook="runbooks/replica_restart.md")
def test_replica_restart(run_experiment, target):
    result = run_experiment(replica_restart.on(target, replicas="1"))
    assert result.verdict == "pass", result.failure_message()
