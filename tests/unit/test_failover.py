"""The failover probe both ways, on synthetic LB samples and request records.

`probes.failover` turns HAProxy's sampled view of a slot and the request log into three
numbers per removed replica: how long after its death the LB kept routing to it, how many
requests failed meanwhile, and when its replacement served its first valid answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from inferchaos.probes.failover import analyse, ejected_at
from inferchaos.probes.lb_sampler import LbSample
from inferchaos.probes.slo import Objective
from inferchaos.probes.verdict import judge, verdict

#: An arbitrary point on the monotonic clock, as a real run's samples would carry.
T0 = 5000.0
VICTIM, VICTIM_PORT = "replica-1", 41001
REPLACEMENT, REPLACEMENT_PORT = "replica-4", 42004


@dataclass(frozen=True)
class Rec:
    start: float
    ok: bool = True
    replica: str | None = None


def states(server: str, port: int, timeline: list[tuple[float, str]], until: float, step: float = 0.1,
           ) -> list[LbSample]:
    """Samples of one server every `step` s: `timeline` is [(from_t, state)], in order."""
    out = []
    n = round((until - timeline[0][0]) / step)
    for i in range(n + 1):
        t = round(timeline[0][0] + i * step, 6)
        state = [s for since, s in timeline if since <= t][-1]
        out.append(LbSample(t, server, port, state))
    return out


def others(until: float) -> list[LbSample]:
    """Two healthy neighbours that must not influence the victim's verdict."""
    return (states("r2", 41002, [(T0, "running")], until)
            + states("r3", 41003, [(T0, "running"), (T0 + 3, "stopped"), (T0 + 4, "running")], until))


def merged(*groups: list[LbSample]) -> list[LbSample]:
    """As the sampler records them: all servers of one poll share its time."""
    return sorted((s for g in groups for s in g), key=lambda s: (s.t, s.server))


FAILOVER = Objective("failover_s", "<=", 8.0, "s")


# ----------------------------------------------------------------------------- ejected_at
def test_ejected_during_the_notice_is_a_failover_of_zero():
    died = T0 + 5.0
    samples = merged(
        states("r1", VICTIM_PORT, [(T0, "running"), (T0 + 3.2, "stopping"), (T0 + 3.5, "stopped")], T0 + 10),
        others(T0 + 10))
    server, out = ejected_at(samples, VICTIM_PORT, died)
    assert server == "r1"
    assert out == pytest.approx(T0 + 3.2)  # the first sample at which it no longer served

    f = analyse(VICTIM, VICTIM_PORT, died, samples, [], None)
    assert f.server == "r1" and f.ejected_at == pytest.approx(T0 + 3.2)
    assert f.failover_s == 0.0  # never negative: ejected before it died is the graceful case
    assert judge([FAILOVER], {"failover_s": f.failover_s})[0].ok


def test_ejected_one_and_a_half_seconds_after_death():
    died = T0 + 5.0
    samples = merged(states("r1", VICTIM_PORT, [(T0, "running"), (T0 + 6.5, "stopped")], T0 + 10),
                     others(T0 + 10))
    f = analyse(VICTIM, VICTIM_PORT, died, samples, [], None)
    assert f.ejected_at == pytest.approx(T0 + 6.5)
    assert f.failover_s == pytest.approx(1.5)
    (result,) = judge([FAILOVER], {"failover_s": f.failover_s})
    assert result.ok and result.observed == pytest.approx(1.5)
    # ...and the same measurement breaches a tighter objective, by name.
    (tight,) = judge([Objective("failover_s", "<=", 1.0, "s")], {"failover_s": f.failover_s})
    assert not tight.ok and tight.name == "failover_s"


def test_never_ejected_is_not_measured_and_fails_the_objective():
    died = T0 + 5.0
    samples = merged(states("r1", VICTIM_PORT, [(T0, "running")], T0 + 10), others(T0 + 10))
    assert ejected_at(samples, VICTIM_PORT, died) == ("r1", None)
    f = analyse(VICTIM, VICTIM_PORT, died, samples, [], None)
    assert f.ejected_at is None and f.failover_s is None
    assert "never" in f.summary()

    results = judge([FAILOVER], {"failover_s": f.failover_s},
                    {"failover_s": "the LB never stopped routing to a removed replica"})
    (result,) = results
    assert not result.ok and result.observed is None
    assert result.detail.startswith("not measured")
    assert verdict(results) == "fail"


def test_a_port_never_sampled_gives_no_server_and_no_failover():
    samples = others(T0 + 10)
    assert ejected_at(samples, VICTIM_PORT, T0 + 5) == (None, None)
    f = analyse(VICTIM, VICTIM_PORT, T0 + 5, samples, [], None)
    assert f.server is None and f.failover_s is None


def test_slot_re_pointed_at_a_replacement_counts_as_ejected():
    """The supervisor re-points the dead slot at the replacement's port: from that sample on,
    the slot is up again, but no longer routes to the victim."""
    died = T0 + 5.0
    samples = merged(
        states("r1", VICTIM_PORT, [(T0, "running")], T0 + 7.9),
        states("r1", REPLACEMENT_PORT, [(T0 + 8.0, "starting"), (T0 + 9.0, "running")], T0 + 12),
        others(T0 + 12))
    server, out = ejected_at(samples, VICTIM_PORT, died)
    assert server == "r1" and out == pytest.approx(T0 + 8.0)
    f = analyse(VICTIM, VICTIM_PORT, died, samples, [], REPLACEMENT)
    assert f.failover_s == pytest.approx(3.0)


def test_ejected_then_re_pointed_keeps_the_ejection_time():
    died = T0 + 5.0
    samples = merged(
        states("r1", VICTIM_PORT, [(T0, "running"), (T0 + 5.4, "stopped")], T0 + 7.9),
        states("r1", REPLACEMENT_PORT, [(T0 + 8.0, "starting"), (T0 + 9.0, "running")], T0 + 12),
        others(T0 + 12))
    f = analyse(VICTIM, VICTIM_PORT, died, samples, [], REPLACEMENT)
    assert f.ejected_at == pytest.approx(T0 + 5.4)
    assert f.failover_s == pytest.approx(0.4)


def test_a_flap_before_death_does_not_count_as_the_ejection():
    """Out of rotation for a moment during the baseline, back, then ejected after death:
    the ejection is the last time it went out, not the first."""
    died = T0 + 5.0
    samples = states("r1", VICTIM_PORT, [(T0, "running"), (T0 + 1.0, "stopped"), (T0 + 2.0, "running"),
                                        (T0 + 7.0, "stopped")], T0 + 10)
    f = analyse(VICTIM, VICTIM_PORT, died, samples, [], None)
    assert f.ejected_at == pytest.approx(T0 + 7.0)
    assert f.failover_s == pytest.approx(2.0)


# ----------------------------------------------------------------------------- request counts
def test_failed_requests_between_death_and_ejection_are_counted():
    died, ejected = T0 + 5.0, T0 + 6.5
    samples = states("r1", VICTIM_PORT, [(T0, "running"), (ejected, "stopped")], T0 + 10)
    records = (
        [Rec(T0 + 4.0 + i * 0.1, ok=False, replica=VICTIM) for i in range(5)]  # before death: not counted
        + [Rec(T0 + 5.0, ok=False, replica=VICTIM)]  # at death: counted
        + [Rec(T0 + 5.5 + i * 0.1, ok=False) for i in range(3)]  # meanwhile: counted
        + [Rec(T0 + 5.2 + i * 0.1, ok=True, replica="replica-2") for i in range(10)]  # ok: not counted
        + [Rec(ejected, ok=False), Rec(T0 + 8.0, ok=False)]  # from ejection on: not counted
    )
    f = analyse(VICTIM, VICTIM_PORT, died, samples, records, None)
    assert f.failover_s == pytest.approx(1.5)
    assert f.failed_before_ejection == 4
    assert "4 requests failed meanwhile" in f.summary()


def test_never_ejected_counts_every_failure_after_death():
    died = T0 + 5.0
    samples = states("r1", VICTIM_PORT, [(T0, "running")], T0 + 10)
    records = [Rec(T0 + 4.9, ok=False)] + [Rec(T0 + 5.0 + i, ok=False) for i in range(5)]
    f = analyse(VICTIM, VICTIM_PORT, died, samples, records, None)
    assert f.failed_before_ejection == 5


def test_ejected_during_the_notice_has_no_failures_to_blame_on_it():
    died = T0 + 5.0
    samples = states("r1", VICTIM_PORT, [(T0, "running"), (T0 + 3.0, "stopped")], T0 + 10)
    records = [Rec(T0 + 5.5, ok=False), Rec(T0 + 6.0, ok=False)]
    f = analyse(VICTIM, VICTIM_PORT, died, samples, records, None)
    assert f.failover_s == 0.0
    assert f.failed_before_ejection == 0


def test_answers_from_the_victim_after_its_death_are_counted():
    died = T0 + 5.0
    samples = states("r1", VICTIM_PORT, [(T0, "running"), (T0 + 6.0, "stopped")], T0 + 10)
    records = [Rec(T0 + 4.0, replica=VICTIM), Rec(T0 + 5.0, replica=VICTIM),  # not after death
               Rec(T0 + 5.1, replica=VICTIM), Rec(T0 + 5.2, replica=VICTIM),
               Rec(T0 + 5.3, ok=False, replica=VICTIM), Rec(T0 + 5.4, replica="replica-2")]
    f = analyse(VICTIM, VICTIM_PORT, died, samples, records, None)
    assert f.served_after_death == 2


# ----------------------------------------------------------------------------- replacement
def test_replacement_first_traffic_is_its_first_valid_answer_after_death():
    died = T0 + 5.0
    samples = merged(states("r1", VICTIM_PORT, [(T0, "running"), (T0 + 4.0, "stopped")], T0 + 7.9),
                     states("r1", REPLACEMENT_PORT, [(T0 + 8.0, "starting")], T0 + 12))
    records = [
        Rec(T0 + 4.5, replica=REPLACEMENT),  # before the death (e.g. a warm pool): not its failover traffic
        Rec(T0 + 8.2, ok=False, replica=REPLACEMENT),  # a failed answer does not count
        Rec(T0 + 8.75, replica=REPLACEMENT),  # the first valid one
        Rec(T0 + 9.0, replica=REPLACEMENT),
        Rec(T0 + 6.0, replica="replica-2"),  # someone else's
    ]
    f = analyse(VICTIM, VICTIM_PORT, died, samples, records, REPLACEMENT)
    assert f.replacement == REPLACEMENT
    assert f.replacement_traffic_s == pytest.approx(3.75)
    assert "replica-4 took traffic after 3.75s" in f.summary()


def test_replacement_that_never_served_is_not_seen():
    died = T0 + 5.0
    samples = states("r1", VICTIM_PORT, [(T0, "running"), (T0 + 4.0, "stopped")], T0 + 10)
    records = [Rec(T0 + 8.0, ok=False, replica=REPLACEMENT), Rec(T0 + 8.5, replica="replica-2")]
    f = analyse(VICTIM, VICTIM_PORT, died, samples, records, REPLACEMENT)
    assert f.replacement_traffic_s is None
    assert "not seen" in f.summary()
    # No replacement known at all: nothing is attributed to one.
    g = analyse(VICTIM, VICTIM_PORT, died, samples, [Rec(T0 + 8.0, replica=REPLACEMENT)], None)
    assert g.replacement is None and g.replacement_traffic_s is None


# ----------------------------------------------------------------------------- clock origin
def test_an_ejection_at_time_zero_is_still_an_ejection():
    """On a run-relative clock 0.0 is a time like any other, not "never ejected"."""
    samples = states("r1", VICTIM_PORT, [(-1.0, "running"), (0.0, "stopped")], 3.0)
    records = [Rec(0.5, ok=False), Rec(1.0, ok=False)]
    f = analyse(VICTIM, VICTIM_PORT, -0.5, samples, records, None)
    assert f.ejected_at == 0.0 and f.failover_s == pytest.approx(0.5)
    assert f.failed_before_ejection == 0


def test_a_hung_replica_that_comes_back_keeps_its_ejection_time():
    """SIGSTOP at 5 s, ejected by the health check at 7 s, resumed at 11 s and back in
    rotation at 12 s: failover is 2 s, and the answers it gave after resuming do not count
    as routed to it while it hung."""
    died = T0 + 5.0
    samples = states("r1", VICTIM_PORT, [(T0, "running"), (T0 + 7.0, "stopped"), (T0 + 12.0, "running")], T0 + 15)
    records = [Rec(T0 + 5.5, replica=VICTIM), Rec(T0 + 6.5, replica=VICTIM),  # stuck, answered late
               Rec(T0 + 12.5, replica=VICTIM), Rec(T0 + 13.0, replica=VICTIM)]  # after it came back
    f = analyse(VICTIM, VICTIM_PORT, died, samples, records, None)
    assert f.ejected_at == pytest.approx(T0 + 7.0)
    assert f.failover_s == pytest.approx(2.0)
    assert f.served_after_death == 2
