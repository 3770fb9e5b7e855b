"""Replica hang: SIGSTOP until revert (then SIGCONT): the socket stays open, nothing answers."""

from inferchaos.faults.spec import RADIUS_REPLICAS, REPLICAS, FaultSpec

replica_hang = FaultSpec(
    "replica_hang",
    summary="SIGSTOP until revert (then SIGCONT): the socket stays open, only the health check's timeout ejects it",
    marker="a replica SIGSTOPped (socket open, no answers)",
    blast_radius=RADIUS_REPLICAS,
    effect="each victim's server process stopped (state T in /proc)",
    params=(REPLICAS,),
)
