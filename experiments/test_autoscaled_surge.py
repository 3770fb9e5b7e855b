"""A flash sale on an autoscaled fleet, three ways: scale from one replica, with a warm pool
of one pre-loaded standby (put behind the LB first, no cold start), and pre-heated to two
replicas ahead of the spike.

Graceful means the capacity arrives while the surge lasts: `scale_out_s` (the surge's start
until new capacity is ready and the client's p99 is back within objective for good) and
p99 itself. The report shows the three side by side; the cost line says what the warm pool
and the pre-heat cost for what they saved.

Under open-loop load a flash sale does not wait for capacity: 4x the arrivals hit one
replica (about 222 rows/s of capacity against 400 requests/s) for the decision, the
provisioning delay and the cold start, and the backlog takes longer still to drain. Scaling
from cold is expected to breach p99_ms and scale_out_s on the reference cluster (and may breach
availability when the backlog is still queued as the load stops) (closed-loop
load hid it: its users waited instead of arriving); the warm pool and the pre-heat hold.
"""

import pytest

from inferchaos.faults.specs.autoscaled_surge import autoscaled_surge

WAYS = {"cold": {}, "warm_pool": {"warm_pool": 1}, "preheat": {"preheat": 2}}
#: what scaling from cold may breach, and must breach p99_ms and scale_out_s among them. The same
#: backlog can also leave requests unanswered when the load stops (availability, incomplete_rate):
#: one clean-clone CI run saw availability 0.9727 with the short hold of the planted-breach test.
COLD_BREACHES = {"p99_ms", "scale_out_s", "goodput_rps", "recovery_s", "schedule_lag_p99_ms",
                 "availability", "incomplete_rate"}
COLD = pytest.mark.xfail(strict=True, raises=AssertionError,
                         reason="a 4x open-loop surge outruns a cold scale-out on the reference cluster")


@pytest.mark.autoscaled_surge
@pytest.mark.chaos(severity="critical", runbook="runbooks/autoscaled_surge.md")
@pytest.mark.parametrize("way", [pytest.param(w, marks=COLD) if w == "cold" else w for w in WAYS])
def test_autoscaled_surge(run_experiment, target, way):
    fault = autoscaled_surge.on(target, factor=4.0, target_waiting=8.0, min_replicas=1, max_replicas=2,
                                **WAYS[way])
    result = run_experiment(fault)
    if way == "cold":
        breached = {s.name for s in result.breached()}
        if result.verdict != "fail" or not {"p99_ms", "scale_out_s"} <= breached <= COLD_BREACHES:
            pytest.fail(f"expected scaling from cold to breach p99_ms and scale_out_s, got: "
                        f"{result.failure_message()}")
    assert result.verdict == "pass", result.failure_message()
