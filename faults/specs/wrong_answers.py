"""Wrong answers: 200 OK, fast, well-formed, and off — silent data corruption."""

from inferchaos.faults.spec import RADIUS_REPLICAS, REPLICAS, FaultSpec, Param

wrong_answers = FaultSpec(
    "wrong_answers",
    summary="a replica keeps answering 200 OK, fast and well-formed, with numbers that are off (noise of `sigma` "
            "on the log-probabilities): silent data corruption",
    marker="a replica answers 200 OK with wrong numbers",
    blast_radius=RADIUS_REPLICAS,
    effect="a golden-set case asked of each victim directly gets a wrong answer (the canary's own check)",
    params=(REPLICAS, Param("sigma", "number", "noise on the log-probabilities (above 0)", default=2.0, above=0.0)),
)
