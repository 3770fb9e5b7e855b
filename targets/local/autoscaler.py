"""The local cluster's autoscaler, with KEDA's (and the HPA's) semantics.

Inference fleets scale on queue length, not CPU: KEDA turns a metric such as the summed
`vllm:num_requests_waiting` into desired replicas = ceil(metric / target) within
[min, max], polled every `polling_s`. The HPA behind it damps flapping with stabilisation
windows: a scale-up takes the lowest recommendation of the last `up_window_s` (0: at once),
a scale-down the highest of the last `cooldown_s`, so replicas leave only after the load
has stayed low that long. `floor` is a pre-heat: capacity held ahead of a known spike.

Pure decision logic here; the supervisor scrapes the replicas and applies the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from inferchaos.ground.errors import UsageError

DEFAULT_METRIC = "vllm:num_requests_waiting"


@dataclass(frozen=True)
class Policy:
    target: float
    min_replicas: int = 1
    max_replicas: int = 4
    metric: str = DEFAULT_METRIC
    polling_s: float = 1.0
    up_window_s: float = 0.0
    cooldown_s: float = 15.0
    #: pre-heat: at least this many replicas, whatever the metric says (0: none).
    floor: int = 0

    def validate(self) -> Policy:
        if not self.target > 0:
            raise UsageError(f"autoscale target must be above 0 (the metric per replica), got {self.target:g}")
        if self.min_replicas < 1:
            raise UsageError(f"autoscale min must be at least 1, got {self.min_replicas}")
        if self.min_replicas > self.max_replicas:
            raise UsageError(f"autoscale min {self.min_replicas} is above max {self.max_replicas}")
        for name in ("polling_s", "up_window_s", "cooldown_s"):
            if getattr(self, name) < 0 or (name == "polling_s" and not self.polling_s > 0):
                raise UsageError(f"autoscale {name} must be {'above' if name == 'polling_s' else 'at least'} 0, "
                                 f"got {getattr(self, name):g}")
        if self.floor < 0:
            raise UsageError(f"preheat must be 0 or more replicas, got {self.floor}")
        return self

    def bounds(self) -> tuple[int, int]:
        low = min(max(self.min_replicas, self.floor), self.max_replicas)
        return low, self.max_replicas

    def recommend(self, value: float) -> int:
        low, high = self.bounds()
        return max(low, min(high, math.ceil(value / self.target - 1e-9) if value > 0 else 0))


@dataclass(frozen=True)
class Decision:
    t: float
    value: float
    current: int
    desired: int


@dataclass
class Autoscaler:
    policy: Policy
    history: list[tuple[float, int]] = field(default_factory=list)

    def decide(self, now: float, value: float, current: int) -> Decision:
        """The desired replica count at `now` for a metric `value`, `current` replicas asked."""
        raw = self.policy.recommend(value)
        self.history.append((now, raw))
        keep = max(self.policy.up_window_s, self.policy.cooldown_s)
        self.history = [(t, r) for t, r in self.history if t >= now - keep]
        low, high = self.policy.bounds()
        if raw > current:
            window = [r for t, r in self.history if t >= now - self.policy.up_window_s] or [raw]
            desired = max(current, min(window))
        elif raw < current:
            window = [r for t, r in self.history if t >= now - self.policy.cooldown_s] or [raw]
            desired = min(current, max(window))
        else:
            desired = current
        return Decision(now, value, current, max(low, min(high, desired)))


def metric_sum(texts: list[str], metric: str) -> float | None:
    """The metric summed over every replica's /metrics text (samples of all its series);
    None when no replica exposes it, which is a missing measurement, not a zero."""
    name = metric.removesuffix("_total")
    total, seen = 0.0, False
    for text in texts:
        try:
            families = list(text_string_to_metric_families(text))
        except (ValueError, TypeError):
            continue
        for family in families:
            for sample in family.samples:
                if sample.name in (metric, name):
                    total += sample.value
                    seen = True
    return total if seen else None


def policy_from(desired: dict) -> Policy | None:
    """The policy the runtime settings (desired.json) ask for; None: autoscaling off."""
    if desired.get("autoscale_target") is None:
        return None
    return Policy(target=float(desired["autoscale_target"]), min_replicas=int(desired.get("autoscale_min", 1)),
                  max_replicas=int(desired.get("autoscale_max", 4)),
                  metric=str(desired.get("autoscale_metric", DEFAULT_METRIC)),
                  polling_s=float(desired.get("autoscale_polling_s", 1.0)),
                  up_window_s=float(desired.get("autoscale_up_window_s", 0.0)),
                  cooldown_s=float(desired.get("autoscale_cooldown_s", 15.0)),
                  floor=int(desired.get("preheat", 0)))


@dataclass
class ScaleLoop:
    """What the supervisor runs each tick: poll the metric when due, decide, remember."""

    autoscaler: Autoscaler | None = None
    desired: int | None = None
    value: float | None = None
    decisions: list[Decision] = field(default_factory=list)
    _next_poll: float = 0.0

    def due(self, policy: Policy | None, now: float) -> bool:
        if policy is None:
            self.autoscaler, self.desired, self.value = None, None, None
            return False
        if self.autoscaler is None:
            self.autoscaler, self._next_poll = Autoscaler(policy), 0.0
        else:
            self.autoscaler.policy = policy  # a changed policy (a pre-heat) keeps its history
        return now >= self._next_poll

    def apply(self, now: float, value: float | None, current: int) -> bool:
        """Record one poll; True when the desired count changed."""
        assert self.autoscaler is not None
        self._next_poll = now + self.autoscaler.policy.polling_s
        self.value = value
        if value is None:  # no replica exposes the metric: hold, never guess
            self.desired = current if self.desired is None else self.desired
            return False
        d = self.autoscaler.decide(now, value, current)
        changed = d.desired != current
        if changed:
            self.decisions = (self.decisions + [d])[-50:]
        self.desired = d.desired
        return changed

    def view(self, wall_offset: float) -> dict:
        """For state.json: the autoscaling probe and `inferchaos status` read it."""
        if self.autoscaler is None:
            return {"enabled": False}
        p = self.autoscaler.policy
        return {"enabled": True, "metric": p.metric, "target": p.target, "min": p.min_replicas, "max": p.max_replicas,
                "floor": p.floor, "value": self.value, "desired": self.desired,
                "decisions": [{"wall": round(d.t + wall_offset, 3), "value": d.value, "from": d.current,
                               "to": d.desired} for d in self.decisions]}
