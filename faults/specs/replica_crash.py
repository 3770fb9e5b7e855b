"""Replica crash: SIGKILL, no notice — a segfault, a kernel OOM kill, a lost node."""

from inferchaos.faults.spec import PROVISIONING, RADIUS_REPLICAS, REPLICAS, FaultSpec

replica_crash = FaultSpec(
    "replica_crash",
    summary="SIGKILL, no notice: a segfault, a kernel OOM kill, a lost node; the supervisor replaces it after the "
            "provisioning delay",
    marker="a replica SIGKILLed",
    blast_radius=RADIUS_REPLICAS,
    effect="each victim's server process gone (local: its process group; Kubernetes: the container restarted)",
    params=(REPLICAS, PROVISIONING),
)
