"""Spot reclamation mid-inference: one replica gets the notice, drains, is killed at the
deadline with requests in flight, and comes back only after the provisioning delay.

Graceful means: clients barely notice (availability, p99), the load balancer stops
routing to the reclaimed replica quickly (failover_s), and once the fault is over the
service is back within its objectives in bounded time (recovery_s).
"""

import pytest

from inferchaos.faults.specs.spot_reclamation import spot_reclamation


@pytest.mark.spot_reclamation
@pytest.mark.chaos(severity="critical", owner="ml-platform", runbook="runbooks/spot_reclamation.md")
def test_spot_reclamation(run_experiment, target):
    # the notice is the target's default (2 s locally; 30 s on Kubernetes, GCP's and Azure's):
    # --fault-set spot_reclamation.notice_s=120 gives AWS's two minutes
    fault = spot_reclamation.on(target, replicas="1", only_on={"local": {"provisioning_delay_s": 3.0}})
    result = run_experiment(fault)
    assert result.verdict == "pass", result.failure_message()
