"""Replica restart: a graceful restart in place — a rollout, a config reload, a liveness kill."""

from inferchaos.faults.spec import RADIUS_REPLICAS, REPLICAS, FaultSpec, Param

replica_restart = FaultSpec(
    "replica_restart",
    summary="a graceful restart in place: SIGTERM (the server drains and exits), then the same replica starts "
            "again at once (a new process locally, the container restarted by the kubelet on Kubernetes)",
    marker="a replica restarted gracefully in place (SIGTERM, then a new process)",
    blast_radius=RADIUS_REPLICAS,
    effect="each victim's server process exited (local: its process group gone; Kubernetes: the container "
           "restarted, restartCount grew)",
    params=(REPLICAS,
            # on Kubernetes the server decides: a server that ignores SIGTERM never lands, and says so
            Param("grace_s", "seconds", "seconds a victim may drain after SIGTERM before it is SIGKILLed",
                  default=5.0, only="local")),
)
