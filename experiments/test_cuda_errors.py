"""CUDA errors under load: one replica's own CUDA calls start failing (an LD_PRELOAD shim
between the server and libcudart), as they do on a full or a broken GPU.

Graceful means: only the batches that hit the error fail (availability), the replica dies
as vLLM's engine does and the LB stops routing to it fast (failover_s), a replacement on
the same faulty GPU crash-loops until the fault is gone, and the service is within
objectives soon after (recovery_s). A server that catches the error and stays up with a
green health check (`up --oom reject`) keeps failing what it is sent: that is a finding.

`oom`: allocations return out-of-memory. `illegal_address`: a kernel launch returns an
illegal memory access, the CUDA context is lost and every later call fails the same way.
"""

import pytest

from inferchaos.faults.specs.cuda_errors import cuda_errors


@pytest.mark.cuda_errors
@pytest.mark.chaos(runbook="runbooks/cuda_errors.md")
@pytest.mark.parametrize("error", ["oom", "illegal_address"])
def test_cuda_errors(run_experiment, target, error):
    result = run_experiment(cuda_errors.on(target, replicas="1", error=error))
    assert result.verdict == "pass", result.failure_message()
