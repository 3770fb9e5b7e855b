"""Data-pipeline lag: the feature pipeline stops (stuck job), or reads from the feature
store get slower than the server's feature timeout.

Graceful means: the service keeps answering within its latency objectives (the feature
timeout and the server's fallback to the last features work), and the age of the
features behind the answers stays within the freshness objective (freshness_s). A lag
longer than that objective fails the run even though every request got a 200.
"""

import pytest

from inferchaos.faults.specs.pipeline_lag import pipeline_lag


@pytest.mark.pipeline_lag
@pytest.mark.chaos(runbook="runbooks/pipeline_lag.md")
@pytest.mark.parametrize("mode", ["stop", "slow_reads"])
def test_pipeline_lag(run_experiment, target, mode):
    result = run_experiment(pipeline_lag.on(target, mode=mode, read_latency_ms=1000.0))
    assert result.verdict == "pass", result.failure_message()
