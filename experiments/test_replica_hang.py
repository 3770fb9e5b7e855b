"""Replica hang: one replica SIGSTOPped for the hold, SIGCONT on revert — behind two LBs.

A hung replica keeps its socket open: no connection error for the LB to retry on, only
the health check's timeout ejects it, and the requests sent to it meanwhile wait. Under
open-loop load users keep arriving whatever the hung replica does, so the LB's reaction
is what they feel. Graceful means nothing fails (availability), the LB ejects it within
seconds (failover_s), and the tail stays within the default p99 objective.

Two LBs, side by side, in front of the same replicas:
- `tuned` (the cluster's own): least connections (a stuck server stops getting new
  requests), checks every second with a 1-s timeout and 2 to fail. It holds: a handful of
  requests wait for the hung replica, too few to move p99.
- `plain`: HAProxy's defaults (round robin, checks every 2 s with 3 to fail, `timeout
  server` 30 s, retries on connection failure only). A third of the arrivals go to the hung
  replica until it resumes: p99 is the hold itself, and the LB may never eject it. Expected
  to breach p99_ms; an SRE who ships those defaults learns it here, not from users.
"""

import pytest

from inferchaos.faults.specs.replica_hang import replica_hang
from inferchaos.ground.errors import NotOnTarget

#: what HAProxy's defaults may breach, p99_ms always: vLLM drops a stream or two it held while
#: hung; the reference server, never ejected, answers with the features it had before the hang.
PLAIN_BREACHES = {"p99_ms", "failover_s", "goodput_rps", "recovery_s", "availability", "error_rate", "freshness_s"}
PLAIN = pytest.mark.xfail(strict=True, raises=AssertionError,
                          reason="behind HAProxy's defaults the requests sent to a hung replica wait for it: "
                                 "p99 breached")


@pytest.mark.replica_hang
@pytest.mark.chaos(runbook="runbooks/replica_hang.md")
@pytest.mark.parametrize("lb", ["tuned", pytest.param("plain", marks=PLAIN)])
def test_replica_hang(run_experiment, target, lb):
    via = None
    if lb == "plain":
        if not hasattr(target, "behind_plain_lb"):
            raise NotOnTarget("the plain-LB comparison needs the local cluster's second HAProxy front")
        via = target.behind_plain_lb()
    result = run_experiment(replica_hang.on(target, replicas="1"), via=via)
    if lb == "plain":
        breached = {s.name for s in result.breached()}
        if result.verdict != "fail" or "p99_ms" not in breached or not breached <= PLAIN_BREACHES:
            pytest.fail(f"expected the plain LB to breach p99_ms (and only {sorted(PLAIN_BREACHES)}), "
                        f"got: {result.failure_message()}")
    assert result.verdict == "pass", result.failure_message()
