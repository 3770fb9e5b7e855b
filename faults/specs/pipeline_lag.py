"""Data-pipeline lag: the feature pipeline stops and/or feature reads get slow; answers go stale."""

from inferchaos.faults.spec import FaultSpec, Param

MODES = ("stop", "slow_reads", "both")

pipeline_lag = FaultSpec(
    "pipeline_lag",
    summary="the feature pipeline stops (SIGSTOP) and/or feature-store reads get slower than the server's "
            "feature timeout; answers keep coming with stale features",
    marker="feature pipeline stopped or feature reads slow",
    blast_radius="the feature pipeline and/or the feature-store route: the features of every replica; no replica "
                 "is stopped",
    effect="the pipeline stopped (local: state T; Kubernetes: its Deployment at 0) and/or a feature read through "
           "the slowed route timed",
    params=(Param("mode", "choice", "stop: the pipeline stops; slow_reads: reads get slow; both", default="stop",
                  choices=MODES),
            Param("read_latency_ms", "ms", "milliseconds added to each feature read (slow_reads, both)",
                  default=1000.0)),
)
