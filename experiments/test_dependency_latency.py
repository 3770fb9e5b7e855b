"""Dependency latency: 50 ms ± 20 ms on every read from the feature store.

Each batch waits for its features, so the added latency shows up in every answer and
eats batch throughput. Graceful means the tail stays within objective and nothing fails.
"""

import pytest

from inferchaos.faults.specs.dependency_latency import dependency_latency


@pytest.mark.dependency_latency
@pytest.mark.chaos(runbook="runbooks/dependency_latency.md")
def test_dependency_latency(run_experiment, target):
    fault = dependency_latency.on(target, dependency="feature_store", latency_ms=50.0, jitter_ms=20.0)
    result = run_experiment(fault)
    assert result.verdict == "pass", result.failure_message()
