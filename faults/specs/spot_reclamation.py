"""Spot reclamation mid-inference: a notice, then the machine is gone; the replacement
comes after the provisioning delay and a cold start (or from a warm pool at once)."""

from inferchaos.faults.spec import PROVISIONING, RADIUS_REPLICAS, REPLICAS, WARM_POOL, FaultSpec, Param

spot_reclamation = FaultSpec(
    "spot_reclamation",
    summary="a spot/preemptible node is reclaimed: notice (SIGTERM, drain), SIGKILL at the deadline, replacement "
            "after the provisioning delay and a cold start (or a warm-pool replica at once)",
    marker="spot instance reclaimed mid-inference (notice, then kill)",
    blast_radius=RADIUS_REPLICAS,
    effect="the reclaimed replicas gone by the notice deadline (local: their process groups; Kubernetes: the "
           "node cordoned and tainted, its inference pods out of service)",
    params=(REPLICAS,
            # a laptop-sized notice locally; a cloud's on a real node: GCP's preemption and Azure's
            # eviction notice are 30 s, AWS's spot interruption notice 2 minutes (set 120 there)
            Param("notice_s", "seconds", "seconds between the notice (SIGTERM / eviction) and the kill; the "
                  "providers give 30 (GCP, Azure) or 120 (AWS)", default=2.0, defaults={"kubernetes": 30.0}),
            PROVISIONING, WARM_POOL),
)
