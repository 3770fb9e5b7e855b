"""A surge on an autoscaled fleet: does capacity arrive before the users leave?"""

from inferchaos.ground.errors import UsageError
from inferchaos.faults.spec import WARM_POOL, Args, FaultSpec, Param


def _check(args: Args) -> None:
    if args.min_replicas < 1 or args.max_replicas < args.min_replicas:
        raise UsageError(f"autoscaled_surge: need 1 <= min_replicas <= max_replicas, got {args.min_replicas}.."
                         f"{args.max_replicas}")
    if args.preheat > args.max_replicas:
        raise UsageError(f"autoscaled_surge: preheat {args.preheat} is above max {args.max_replicas}")


autoscaled_surge = FaultSpec(
    "autoscaled_surge",
    summary="the cluster autoscales on queue length (KEDA's semantics) from `min_replicas`, optionally with a warm "
            "pool or a pre-heat; then the load jumps `factor`-fold: does capacity arrive in time?",
    marker="a surge on a fleet that autoscales on queue length",
    blast_radius="the whole cluster: its replica count follows the autoscaler between min and max; nothing is "
                 "stopped",
    effect="the surge's own requests reach at least half the extra arrival rate asked",
    params=(Param("factor", "number", "load multiplier over the experiment's own arrival rate", default=4.0,
                  above=1.0),
            Param("target_waiting", "number", "summed vllm:num_requests_waiting per replica to aim at", default=4.0,
                  above=0.0),
            Param("min_replicas", "count", "fewest replicas", default=1),
            Param("max_replicas", "count", "most replicas", default=4),
            Param("cooldown_s", "seconds", "scale-down stabilisation", default=4.0),
            WARM_POOL,
            Param("preheat", "count", "replicas held ready before the surge (0: none)", default=0),
            Param("autoscaler", "bool", "false: the same surge with scaling off (the planted breach)", default=True),
            Param("provisioning_delay_s", "seconds", "seconds before a new replica starts", default=1.0,
                  only="local")),
    standalone_refusal="autoscaled_surge runs only inside an experiment (it multiplies the experiment's own load): "
                       "run `pytest experiments/test_autoscaled_surge.py`",
    check=_check,
)
