"""What a target can show a probe, by name: a probe declares what it needs, and where the
target lacks it the measurement is "not measured: the target has no <capability>" by
construction, never a silent zero or a guess.
"""

from __future__ import annotations

#: the load balancer's per-server state (HAProxy's admin socket; the Service's endpoints).
LB_SLOTS = "lb_slots"
#: each answer names the replica that gave it (x-inferchaos-replica).
REPLICA_HEADER = "replica_header"
#: the replicas' Prometheus metrics, reachable from the runner.
METRICS = "metrics"
#: the GPUs, visible to NVML where the runner runs.
GPU = "gpu"
#: an autoscaler whose decisions can be read.
AUTOSCALER = "autoscaler"
#: the reference model, whose golden set is known.
GOLDEN_SET = "golden_set"

DESCRIBE: dict[str, str] = {
    LB_SLOTS: "load-balancer view of its servers",
    REPLICA_HEADER: "replica header on its answers",
    METRICS: "replica metrics reachable from the runner",
    GPU: "GPU visible to NVML on the runner's host",
    AUTOSCALER: "autoscaler to read",
    GOLDEN_SET: "known golden set (not the reference model)",
}


def missing(needs: frozenset[str], has: frozenset[str]) -> str | None:
    """"the target has no X" for what `needs` lacks in `has`, else None."""
    lacking = sorted(needs - has)
    return None if not lacking else "the target has no " + "; no ".join(DESCRIBE.get(c, c) for c in lacking)
