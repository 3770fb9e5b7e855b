"""What a run's replicas cost in GPU time, and what its faults cost in SLO minutes.

Pure functions over data the run already has: the target's replica records (name, slot,
started_at, died_at in wall seconds; slot None = a warm-pool standby), the run's window
in the same wall seconds, GPUs per replica and a price per GPU-hour (optionally one per
GPU type). Warm-pool standby time is counted apart from serving time: it is the price of
failing over fast, and the number a team weighs against the SLO minutes it saves.

A replica's record says only where it is now: a warm-pool replica promoted during the run
counts as serving for the whole of its life in the window.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Protocol

from inferchaos.ground.errors import UsageError
from inferchaos.probes.slo import ExperimentSlo, Objective
from inferchaos.probes.verdict import meets
from inferchaos.probes.window import Record, WindowStats, series

DAY_S = 86400.0
HOUR_S = 3600.0
GPU_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")


class ReplicaLife(Protocol):
    """What cost needs of a replica record (`ReplicaRecord`, `PodView` fit)."""

    @property
    def name(self) -> str: ...
    @property
    def slot(self) -> int | None: ...
    @property
    def started_at(self) -> float: ...
    @property
    def died_at(self) -> float | None: ...


# ----------------------------------------------------------------------------- prices
def _price(text: str | float, what: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise UsageError(f"{what}: expected a price per GPU-hour, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"{what}: a price per GPU-hour must be 0 or more, got {text!r}")
    return value


@dataclass(frozen=True)
class Prices:
    """Price per GPU-hour: one for every GPU, and optionally one per GPU type."""

    per_gpu_hour: float
    by_type: Mapping[str, float] = field(default_factory=dict)
    currency: str = "$"

    def __post_init__(self) -> None:
        _price(self.per_gpu_hour, "price")
        for kind, value in self.by_type.items():
            if not isinstance(kind, str) or not GPU_TYPE.match(kind):
                raise UsageError(f"GPU type {kind!r}: expected a name like NVIDIA-A100-SXM4-80GB or g5.xlarge")
            _price(value, f"price of {kind}")

    @classmethod
    def parse(cls, default: str | float, by_type: Iterable[str] = (), currency: str = "$") -> Prices:
        """`default` per GPU-hour, and TYPE=PRICE entries, e.g. ("NVIDIA-H100-80GB-HBM3=4.10",)."""
        types: dict[str, float] = {}
        for entry in by_type:
            kind, sep, value = entry.partition("=")
            kind = kind.strip()
            if not sep or not GPU_TYPE.match(kind):
                raise UsageError(f"GPU price {entry!r}: expected TYPE=PRICE, e.g. NVIDIA-A100-SXM4-80GB=2.50")
            types[kind] = _price(value.strip(), f"price of {kind}")
        return cls(_price(default, "price"), types, currency)

    def of(self, gpu_type: str | None) -> float:
        return self.by_type.get(gpu_type, self.per_gpu_hour) if gpu_type else self.per_gpu_hour


# ----------------------------------------------------------------------------- GPU time
@dataclass(frozen=True)
class Lifetime:
    """One replica's time within the window."""

    name: str
    standby: bool
    start: float
    end: float
    gpus: int
    gpu_type: str | None
    price_per_gpu_hour: float

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def gpu_seconds(self) -> float:
        return self.seconds * self.gpus

    @property
    def cost(self) -> float:
        return self.gpu_seconds / HOUR_S * self.price_per_gpu_hour


def lifetimes(records: Iterable[ReplicaLife], start: float, end: float, prices: Prices,
              gpus: int | Mapping[str, int] = 1, gpu_types: str | Mapping[str, str] | None = None) -> list[Lifetime]:
    """Each replica's life clipped to [start, end): one that started before the window counts
    from its start, one still alive counts to its end; one outside it is left out."""
    if not (math.isfinite(start) and math.isfinite(end)) or end < start:
        raise UsageError(f"cost window ends before it starts: [{start}, {end})")
    out = []
    for r in records:
        n = gpus if isinstance(gpus, int) else gpus.get(r.name, 1)
        if n < 0:
            raise UsageError(f"GPUs per replica must be 0 or more, got {n} for {r.name}")
        kind = gpu_types if isinstance(gpu_types, str) or gpu_types is None else gpu_types.get(r.name)
        died = end if r.died_at is None else r.died_at
        # a warm-pool replica promoted into a slot was idle standby until its promotion
        promoted = getattr(r, "promoted_at", None)
        parts = [(r.started_at, promoted, True), (promoted, died, False)] if promoted is not None \
            else [(r.started_at, died, r.slot is None)]
        for a, b, standby in parts:
            lo, hi = max(a, start), min(b, end)
            if hi > lo:
                out.append(Lifetime(r.name, standby, lo, hi, n, kind, prices.of(kind)))
    return out


def _peak(lives: list[Lifetime]) -> int:
    """Most replicas alive at one moment (a death and a birth at the same instant do not overlap)."""
    events = sorted([(x.start, 1) for x in lives] + [(x.end, -1) for x in lives], key=lambda e: (e[0], e[1]))
    now = best = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


@dataclass(frozen=True)
class RunCost:
    window_s: float
    serving_gpu_s: float
    warm_pool_gpu_s: float
    serving_cost: float
    warm_pool_cost: float
    #: most replicas serving / standing by at one moment of the window.
    serving_replicas: int
    warm_pool_replicas: int
    prices: Prices
    lifetimes: tuple[Lifetime, ...]

    @property
    def total_cost(self) -> float:
        return self.serving_cost + self.warm_pool_cost

    def to_dict(self) -> dict:
        return {"window_s": self.window_s, "serving_gpu_s": self.serving_gpu_s, "warm_pool_gpu_s": self.warm_pool_gpu_s,
                "serving_cost": self.serving_cost, "warm_pool_cost": self.warm_pool_cost,
                "total_cost": self.total_cost, "serving_replicas": self.serving_replicas,
                "warm_pool_replicas": self.warm_pool_replicas, "per_gpu_hour": self.prices.per_gpu_hour,
                "per_gpu_hour_by_type": dict(self.prices.by_type), "currency": self.prices.currency,
                "warm_pool_cost_per_day": per_day(self.warm_pool_cost, self.window_s) if self.window_s else None}


def run_cost(records: Iterable[ReplicaLife], start: float, end: float, prices: Prices,
             gpus: int | Mapping[str, int] = 1, gpu_types: str | Mapping[str, str] | None = None) -> RunCost:
    """GPU-seconds and cost of the replicas serving and of the warm pool over [start, end)."""
    lives = lifetimes(records, start, end, prices, gpus, gpu_types)
    serving = [x for x in lives if not x.standby]
    warm = [x for x in lives if x.standby]
    return RunCost(
        window_s=end - start,
        serving_gpu_s=sum(x.gpu_seconds for x in serving), warm_pool_gpu_s=sum(x.gpu_seconds for x in warm),
        serving_cost=sum(x.cost for x in serving), warm_pool_cost=sum(x.cost for x in warm),
        serving_replicas=_peak(serving), warm_pool_replicas=_peak(warm), prices=prices, lifetimes=tuple(lives))


def per_day(cost_of_window: float, window_s: float) -> float:
    """What a cost seen over `window_s` seconds comes to in a day at the same rate."""
    if not math.isfinite(window_s) or window_s <= 0:
        raise UsageError(f"a cost per day needs a window of more than 0 seconds, got {window_s}")
    if not math.isfinite(cost_of_window) or cost_of_window < 0:
        raise UsageError(f"a cost must be 0 or more, got {cost_of_window}")
    return cost_of_window * DAY_S / window_s


# ----------------------------------------------------------------------------- SLO minutes
@dataclass(frozen=True)
class SloLoss:
    """The 1-s windows judged, those that breached the error or p99 objective, and their time."""

    windows: int
    breached: int
    seconds_lost: float
    #: start of each breached window, on the records' clock.
    breached_at: tuple[float, ...] = ()

    @property
    def minutes_lost(self) -> float:
        return self.seconds_lost / 60.0


def slo_loss(records: Iterable[Record], start: float, end: float,
             objectives: ExperimentSlo | Iterable[Objective], step_s: float = 1.0) -> SloLoss:
    """Windows of `step_s` over [start, end) judged as `probes.verdict.recovery_time` judges
    them: within the availability/error_rate and p99_ms objectives, and not empty (a hung
    service starts no requests). A trailing sliver shorter than a step is not judged."""
    objs = list(objectives.objectives if isinstance(objectives, ExperimentSlo) else objectives)
    criteria = [o for o in objs if o.key in ("availability", "error_rate", "p99_ms")]
    if not criteria:
        raise UsageError("SLO minutes need an availability, error_rate or p99_ms objective")
    windows = series(records, start, end, step_s)
    if len(windows) > 1 and windows[-1].end - windows[-1].start < step_s:
        windows = windows[:-1]
    bad = [w for w in windows if not _healthy(w, criteria)]
    return SloLoss(len(windows), len(bad), sum(w.end - w.start for w in bad), tuple(w.start for w in bad))


def _healthy(w: WindowStats, criteria: list[Objective]) -> bool:
    if w.requests == 0:
        return False
    for o in criteria:
        value = getattr(w, o.key)
        if value is None or not meets(o, value):
            return False
    return True


# ----------------------------------------------------------------------------- one line
def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def cost_line(cost: RunCost, loss: SloLoss | None = None) -> str:
    """e.g. "warm pool: 1 replica, 0.0042 $/run, 3.02 $/day at 2.50 $/GPU-hour; serving: 3
    replicas, 0.0125 $/run; SLO minutes lost: 0.2"."""
    c = cost.prices.currency
    price = f"{cost.prices.per_gpu_hour:.2f} {c}/GPU-hour"
    if cost.prices.by_type:
        price += " (" + ", ".join(f"{k} {v:.2f}" for k, v in sorted(cost.prices.by_type.items())) + ")"
    daily = per_day(cost.warm_pool_cost, cost.window_s) if cost.window_s > 0 else 0.0
    parts = [f"warm pool: {_plural(cost.warm_pool_replicas, 'replica')}, {cost.warm_pool_cost:.4f} {c}/run, "
             f"{daily:.2f} {c}/day at {price}",
             f"serving: {_plural(cost.serving_replicas, 'replica')}, {cost.serving_cost:.4f} {c}/run"]
    if loss is not None:
        parts.append(f"SLO minutes lost: {loss.minutes_lost:.1f}")
    return "; ".join(parts)
