"""Traffic surge: the arrival rate jumps N-fold for the fault window — the flash sale."""

from inferchaos.faults.spec import FaultSpec, Param

traffic_surge = FaultSpec(
    "traffic_surge",
    summary="a second locust adds (factor - 1) x the experiment's arrival rate (its users, under closed loop) for "
            "the fault window: the flash sale",
    marker="load jumps N-fold for the fault window",
    blast_radius="the whole endpoint: every replica sees the extra load; nothing is stopped",
    effect="the surge's own requests reach at least half the extra arrival rate asked",
    params=(Param("factor", "number", "load multiplier over the experiment's own arrival rate", default=4.0,
                  above=1.0),
            Param("spawn_rate", "number", "users the surge starts per second (closed loop)", default=200.0,
                  above=0.0)),
    standalone_refusal="traffic_surge runs only inside an experiment (it multiplies the experiment's own load): "
                       "run `pytest experiments/test_traffic_surge.py`",
)
