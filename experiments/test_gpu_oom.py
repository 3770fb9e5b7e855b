"""GPU out-of-memory under load: a hog leaves no device memory on one replica's GPU.

Graceful means: only the requests of the batch that hit the OOM fail (availability),
the LB stops routing to the OOMing replica fast (failover_s), its replacement serves
once memory is back, and the service is within objectives soon after (recovery_s).
While the hog holds the GPU the replacement on that device cannot load and restarts,
as a pod does in CrashLoopBackOff on a GPU something else has filled.

`gradual`: memory pressure grows over 4 s (fragmentation, a leak) instead of at once.
"""

import pytest

from inferchaos.faults.specs.gpu_oom import gpu_oom


@pytest.mark.gpu_oom
@pytest.mark.chaos(runbook="runbooks/gpu_oom.md")
@pytest.mark.parametrize("ramp_s", [0.0, 4.0], ids=["sudden", "gradual"])
def test_gpu_oom(run_experiment, target, ramp_s):
    result = run_experiment(gpu_oom.on(target, replicas="1", leave="0", ramp_s=ramp_s))
    assert result.verdict == "pass", result.failure_message()
