"""A flash sale on an autoscaled fleet, three ways: scale from one replica, with a warm pool
of one pre-loaded standby (put behind the LB first, no cold start), and pre-heated to two
replicas ahead of the spike.

Graceful means the capacity arrives while the surge lasts: `scale_out_s` (the surge's start
until new capacity is ready and the client's p99 is back within objective for good) and
p99 itself. The report shows the three side by side; the cost line says what the warm pool
and the pre-heat cost for what they saved.
"""

import pytest

from faults.autoscaled_surge import AutoscaledSurge

WAYS = {"cold": {}, "warm_pool": {"warm_pool": 1}, "preheat": {"preheat": 2}}


@pytest.mark.autoscaled_surge
@pytest.mark.chaos(severity="critical", runbook="runbooks/autoscaled_surge.md")
@pytest.mark.parametrize("way", list(WAYS))
def test_autoscaled_surge(run_experiment, target, way):
    fault = AutoscaledSurge(target=target, factor=4.0, target_waiting=8.0, min_replicas=1, max_replicas=2,
                            **WAYS[way])
    result = run_experiment(fault)
    assert result.verdict == "pass", result.failure_message()
