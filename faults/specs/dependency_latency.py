"""Dependency latency: the path from the replicas to a store gets slow, jittery, narrow, stalls or resets."""

from inferchaos.ground.errors import UsageError
from inferchaos.faults.spec import Args, FaultSpec, Param

DEPENDENCIES = ("model_store", "feature_store")


def _check(args: Args) -> None:
    if not (args.latency_ms or args.jitter_ms or args.bandwidth_kbs or args.stall_s or args.get("reset")):
        raise UsageError("dependency_latency: nothing to inject (give latency_ms, jitter_ms, bandwidth_kbs, "
                         "stall_s or reset)")


dependency_latency = FaultSpec(
    "dependency_latency",
    summary="latency, jitter, a bandwidth limit, a stall or resets on the path from the replicas to a store",
    marker="latency, jitter or resets toward a dependency",
    blast_radius="the route to one dependency, as every replica sees it (Kubernetes: from `replicas` of the Ready "
                 "pods, default all); the store itself stays healthy",
    effect="the route reads back degraded and one request through it is timed slow (or stalls, or is reset)",
    params=(Param("dependency", "choice", "which route: model_store or feature_store", default="feature_store",
                  choices=DEPENDENCIES),
            Param("latency_ms", "ms", "milliseconds added to each response", default=50.0),
            Param("jitter_ms", "ms", "random +- milliseconds on top of latency_ms", default=0.0),
            Param("bandwidth_kbs", "number", "bandwidth limit per connection in KB/s; none = unlimited",
                  above=0.0, nullable=True),
            Param("stall_s", "seconds", "seconds the route stalls from injection (0: no stall; inf: until revert)",
                  default=0.0, allow_inf=True),
            # Chaos Mesh has no RST action
            Param("reset", "bool", "reset connections (true) instead of passing them", default=False, only="local"),
            # locally every replica reads through one proxy route; on Kubernetes the chaos names its pods
            Param("replicas", "radius", "the Ready pods whose path is degraded: a count or a share (e.g. 50%)",
                  default="100%", only="kubernetes")),
    check=_check,
)
