"""The local cluster's executors: importing this package registers them."""

from inferchaos.faults.local import (autoscaled_surge, cuda_errors, dependency_latency, gpu_oom,  # noqa: F401
                                     model_load_stall, pipeline_lag, replica_crash, replica_hang, spot_reclamation,
                                     wrong_answers)
