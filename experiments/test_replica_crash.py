"""Replica crash: one replica SIGKILLed with requests in flight, no notice.

Graceful means: the LB's retries hide most of it (availability), it stops routing to
the dead replica within seconds (failover_s), and the replacement restores capacity.
"""

import pytest

from inferchaos.faults.specs.replica_crash import replica_crash


@pytest.mark.replica_crash
@pytest.mark.chaos(runbook="runbooks/replica_crash.md")
def test_replica_crash(run_experiment, target):
    result = run_experiment(replica_crash.on(target, replicas="1"))
    assert result.verdict == "pass", result.failure_message()
