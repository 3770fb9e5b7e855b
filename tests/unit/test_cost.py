"""GPU cost of a run's replicas, warm pool apart, and SLO minutes lost: exact figures."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from inferchaos.ground.errors import UsageError
from inferchaos.load.records import RequestRecord
from inferchaos.probes.cost import Prices, cost_line, lifetimes, per_day, run_cost, slo_loss
from inferchaos.probes.slo import Objective
from inferchaos.targets.local.state import ReplicaRecord

# 3.60 per GPU-hour is 0.001 per GPU-second: every figure below can be checked by eye.
PRICE = Prices(3.60)
START, END = 1000.0, 1100.0


@dataclass(frozen=True)
class Life:
    name: str
    slot: int | None
    started_at: float
    died_at: float | None = None


RECORDS = [
    Life("replica-0", 1, 800.0, 900.0),    # died before the window: not counted
    Life("replica-1", 1, 900.0),           # started before the window: counts from 1000 -> 100 s
    Life("replica-2", 2, 950.0, 1040.0),   # died inside it: 1000..1040 -> 40 s
    Life("replica-3", 2, 1050.0),          # its replacement: 1050..1100 -> 50 s
    Life("replica-4", None, 990.0),        # warm pool standby the whole window -> 100 s
    Life("replica-5", 3, 1100.0),          # started at the window's end: not counted
]


def test_serving_and_warm_pool_gpu_seconds_and_cost_are_apart():
    cost = run_cost(RECORDS, START, END, PRICE)
    assert cost.window_s == 100.0
    assert cost.serving_gpu_s == 190.0
    assert cost.warm_pool_gpu_s == 100.0
    assert cost.serving_cost == pytest.approx(0.19, abs=1e-12)
    assert cost.warm_pool_cost == pytest.approx(0.10, abs=1e-12)
    assert cost.total_cost == pytest.approx(0.29, abs=1e-12)
    assert (cost.serving_replicas, cost.warm_pool_replicas) == (2, 1)  # replica-3 came after replica-2 died
    lives = {x.name: (x.start, x.end, x.standby) for x in cost.lifetimes}
    assert lives == {"replica-1": (1000.0, 1100.0, False), "replica-2": (1000.0, 1040.0, False),
                     "replica-3": (1050.0, 1100.0, False), "replica-4": (1000.0, 1100.0, True)}


def test_gpus_per_replica_multiply_and_can_differ_by_replica():
    assert run_cost(RECORDS, START, END, PRICE, gpus=2).serving_gpu_s == 380.0
    cost = run_cost(RECORDS, START, END, PRICE, gpus={"replica-1": 4, "replica-4": 0})
    assert cost.serving_gpu_s == 400.0 + 40.0 + 50.0  # others default to 1
    assert cost.warm_pool_gpu_s == 0.0 and cost.warm_pool_cost == 0.0


def test_prices_per_gpu_type_apply_to_the_replicas_of_that_type():
    prices = Prices.parse("3.60", ["NVIDIA-H100-80GB-HBM3=7.20", "g5.xlarge=1.80"])
    types = {"replica-1": "NVIDIA-H100-80GB-HBM3", "replica-2": "g5.xlarge", "replica-4": "g5.xlarge"}
    cost = run_cost(RECORDS, START, END, prices, gpu_types=types)
    # H100 100 s at 0.002/s + g5 40 s at 0.0005/s + replica-3 (no type: default) 50 s at 0.001/s
    assert cost.serving_cost == pytest.approx(0.2 + 0.02 + 0.05, abs=1e-12)
    assert cost.warm_pool_cost == pytest.approx(0.05, abs=1e-12)
    # one type for every replica; an unknown type takes the default price
    assert run_cost(RECORDS, START, END, prices, gpu_types="g5.xlarge").serving_cost == pytest.approx(0.095)
    assert run_cost(RECORDS, START, END, prices, gpu_types="NVIDIA-T4").serving_cost == pytest.approx(0.19)


def test_real_replica_records_fit():
    recs = [ReplicaRecord("replica-1", 1, 9000, 1, 1, 0, "ready", started_at=990.0),
            ReplicaRecord("replica-2", None, 9001, 2, 2, 1, "ready", started_at=1020.0)]
    cost = run_cost(recs, START, END, PRICE)
    assert (cost.serving_gpu_s, cost.warm_pool_gpu_s) == (100.0, 80.0)


def test_per_day_and_the_cost_line():
    assert per_day(0.1, 100.0) == pytest.approx(86.4)
    cost = run_cost(RECORDS, START, END, Prices(2.50))
    records = [RequestRecord(start=float(t), wall=0.0, latency_s=0.01, kind="infer", status=200, ok=True)
               for t in range(12)]
    records += [RequestRecord(start=12.5, wall=0.0, latency_s=0.01, kind="infer", status=500, ok=False)]
    loss = slo_loss(records, 0.0, 14.0, [Objective("availability", ">=", 0.99, "fraction")])
    assert (loss.breached, loss.seconds_lost) == (2, 2.0)  # 12: errors, 13: no requests
    assert cost_line(cost, loss) == (
        "warm pool: 1 replica, 0.0694 $/run, 60.00 $/day at 2.50 $/GPU-hour; "
        "serving: 2 replicas, 0.1319 $/run; SLO minutes lost: 0.0")
    typed = run_cost(RECORDS, START, END, Prices.parse(2.5, ["A100=3"]))
    assert cost_line(typed).startswith("warm pool: 1 replica, 0.0694 $/run, 60.00 $/day at 2.50 $/GPU-hour (A100 3.00)")


def _req(t: float, ok: bool = True, latency_s: float = 0.05) -> RequestRecord:
    return RequestRecord(start=t, wall=0.0, latency_s=latency_s, kind="infer", status=200 if ok else 503, ok=ok)


def test_slo_minutes_lost_counts_windows_breaching_errors_or_p99_and_empty_ones():
    objectives = [Objective("availability", ">=", 0.9, "fraction"), Objective("p99_ms", "<=", 500.0, "ms"),
                  Objective("freshness_s", "<=", 1.0, "s")]  # not a window criterion: ignored
    records = [_req(0.1 * i) for i in range(10)]                         # [0,1): healthy
    records += [_req(1.0 + 0.1 * i, ok=i > 2) for i in range(10)]        # [1,2): 3 of 10 failed
    records += [_req(2.0 + 0.1 * i, latency_s=0.6) for i in range(10)]   # [2,3): p99 600 ms
    #                                                                      [3,4): no request at all
    records += [_req(4.0 + 0.1 * i) for i in range(10)]                  # [4,5): healthy
    records += [_req(5.1, ok=False)]                                     # [5,5.5): a sliver, not judged
    loss = slo_loss(records, 0.0, 5.5, objectives)
    assert (loss.windows, loss.breached, loss.breached_at) == (5, 3, (1.0, 2.0, 3.0))
    assert loss.seconds_lost == 3.0 and loss.minutes_lost == pytest.approx(0.05)
    # one failure in ten is within availability >= 0.9: the boundary is met...
    edge = [_req(0.1 * i, ok=i > 0) for i in range(10)]
    assert slo_loss(edge, 0.0, 1.0, objectives[:1]).breached == 0
    # ...but it is past p99's rank, and a failure counts as at least the client timeout
    assert slo_loss(edge, 0.0, 1.0, objectives).breached == 1


@pytest.mark.parametrize("make, message", [
    (lambda: Prices(-1.0), "price: a price per GPU-hour must be 0 or more, got -1.0"),
    (lambda: Prices.parse("-0.5"), "must be 0 or more"),
    (lambda: Prices.parse("cheap"), "price: expected a price per GPU-hour, got 'cheap'"),
    (lambda: Prices.parse("nan"), "must be 0 or more"),
    (lambda: Prices.parse(1, ["H100"]), "GPU price 'H100': expected TYPE=PRICE"),
    (lambda: Prices.parse(1, ["my gpu=2"]), "expected TYPE=PRICE"),
    (lambda: Prices.parse(1, ["=2"]), "expected TYPE=PRICE"),
    (lambda: Prices.parse(1, ["H100=-3"]), "price of H100: a price per GPU-hour must be 0 or more"),
    (lambda: Prices(1.0, {"bad type": 2.0}), "GPU type 'bad type'"),
    (lambda: per_day(1.0, 0.0), "a window of more than 0 seconds"),
    (lambda: per_day(-1.0, 10.0), "a cost must be 0 or more"),
    (lambda: run_cost(RECORDS, 10.0, 5.0, PRICE), "cost window ends before it starts"),
    (lambda: lifetimes(RECORDS, START, END, PRICE, gpus={"replica-1": -1}), "GPUs per replica must be 0 or more"),
    (lambda: slo_loss([], 0.0, 1.0, [Objective("freshness_s", "<=", 1.0, "s")]), "need an availability"),
])
def test_bad_input_is_one_usage_error_line(make, message):
    with pytest.raises(UsageError) as err:
        make()
    assert message in str(err.value) and "\n" not in str(err.value)
