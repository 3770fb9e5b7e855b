"""Traffic surge: the load jumps 4x for the fault window — the flash sale.

Batches fill and queues grow. Graceful means no errors, and the client tail (p99_ms) and
the servers' own queue time (queue_p99_ms) stay within what the surge objective allows.
"""

import pytest

from inferchaos.faults.specs.traffic_surge import traffic_surge


@pytest.mark.traffic_surge
@pytest.mark.chaos(runbook="runbooks/traffic_surge.md")
def test_traffic_surge(run_experiment, target):
    result = run_experiment(traffic_surge.on(target, factor=4.0))
    assert result.verdict == "pass", result.failure_message()
