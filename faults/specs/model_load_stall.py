"""Model-load stall: the model store stalls exactly when replicas must (re)load their weights."""

from inferchaos.ground.errors import UsageError
from inferchaos.faults.spec import PROVISIONING, RADIUS_REPLICAS, REPLICAS, WARM_POOL, Args, FaultSpec, Param


def _check(args: Args) -> None:
    if not (args.stall_s or args.bandwidth_kbs or args.latency_ms):
        raise UsageError("model_load_stall: nothing slows the store (give stall_s, bandwidth_kbs or latency_ms)")


model_load_stall = FaultSpec(
    "model_load_stall",
    summary="the model-store route stalls, is throttled or delayed, then `replicas` replicas are crashed so their "
            "replacements must load their weights through it",
    marker="model store slow or stalled while replicas load",
    blast_radius="the model-store route (every replica that (re)loads while it holds) and " + RADIUS_REPLICAS,
    effect="the store's route reads back slowed and the victims are gone, so their replacements load through it",
    params=(REPLICAS,
            Param("stall_s", "seconds", "seconds the store stalls from injection; inf = until revert", default=5.0,
                  allow_inf=True),
            Param("bandwidth_kbs", "number", "bandwidth limit per connection in KB/s; none = unlimited",
                  above=0.0, nullable=True),
            Param("latency_ms", "ms", "milliseconds added to every response from the store", default=0.0),
            WARM_POOL, PROVISIONING),
    check=_check,
)
