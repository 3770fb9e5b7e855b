"""Model-load stall: the model store stalls for 5 s just as a crashed replica's
replacement must load its weights.

Without a warm pool the slot stays empty until the stall ends and the weights arrive
(replacement_s and cold_start_s show how long); with one, a pre-loaded standby takes the
slot at once and only the pool's refill waits for the store. Both must keep the service
within its objectives; the report puts the two side by side.
"""

import pytest

from inferchaos.faults.specs.model_load_stall import model_load_stall


@pytest.mark.model_load_stall
@pytest.mark.chaos(runbook="runbooks/model_load_stall.md")
@pytest.mark.parametrize("warm_pool", [0, 1], ids=["cold", "warm_pool"])
def test_model_load_stall(run_experiment, target, warm_pool):
    fault = model_load_stall.on(target, replicas="1", stall_s=5.0,
                                only_on={"local": {"warm_pool": warm_pool, "provisioning_delay_s": 1.0}})
    result = run_experiment(fault)
    assert result.verdict == "pass", result.failure_message()
