"""Replica hang: one replica SIGSTOPped for the hold, SIGCONT on revert.

A hung replica keeps its socket open: no connection error for the LB to retry on, only
the health check's timeout ejects it, and the requests already sent to it wait until it
resumes. Graceful means nothing fails (availability), the LB ejects it within seconds
(failover_s), and the tail latency the stuck requests feel stays bounded (p99_ms).
"""

import pytest

from faults.replica_hang import ReplicaHang


@pytest.mark.replica_hang
@pytest.mark.chaos(runbook="runbooks/replica_hang.md")
def test_replica_hang(run_experiment, target):
    result = run_experiment(ReplicaHang(target=target, replicas="1"))
    assert result.verdict == "pass", result.failure_message()
