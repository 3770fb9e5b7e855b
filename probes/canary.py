"""The golden-set canary, running through every phase of an experiment.

It asks the load balancer one golden case at a time, round robin, every `interval_s`,
and keeps each check with its time, so the verdict can judge the same window as every
other SLO and the report can show when answers went wrong. A request that got no valid
answer is counted apart ("unanswered"): availability judges those; the canary judges
only whether the answers that came were right.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import httpx

from inferchaos.probes.measure import FRACTION, Measure
from inferchaos.probes.model_health import REPLICA_HEADER, GoldenCase, check_answer, infer_body

GOLDEN = Measure("golden_pass_rate", ">=", "fraction", "golden-set canary answers (inject -> end) that matched the "
                 "expected outputs, of those answered", FRACTION, window="after_inject")


@dataclass(frozen=True)
class Check:
    t: float
    case: str
    #: True when a valid answer came; only those are judged right or wrong.
    answered: bool
    ok: bool
    replica: str | None
    detail: str


@dataclass(frozen=True)
class GoldenWindow:
    checked: int
    wrong: int
    unanswered: int
    #: first few wrong answers, e.g. "seeded-2: output[3] 0.41 != expected 0.12 (replica replica-1)".
    examples: tuple[str, ...]

    @property
    def pass_rate(self) -> float | None:
        return None if not self.checked else 1 - self.wrong / self.checked


class Canary:
    def __init__(self, base_url: str, cases: Sequence[Any], model: str = "mlp", interval_s: float = 0.25,
                 timeout_s: float = 5.0, headers: Mapping[str, str] | None = None) -> None:
        if not cases:
            raise ValueError("the golden set is empty")
        self.cases, self.model, self.interval_s = list(cases), model, interval_s
        self.checks: list[Check] = []
        self._client = httpx.Client(base_url=base_url, timeout=timeout_s, headers=dict(headers or {}))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="golden-canary", daemon=True)

    def start(self) -> Canary:
        self._thread.start()
        return self

    def stop(self) -> list[Check]:
        self._stop.set()
        self._thread.join(10)
        self._client.close()
        return self.checks

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            self.checks.append(self.check(self.cases[i % len(self.cases)]))
            i += 1
            self._stop.wait(self.interval_s)

    def check(self, case: GoldenCase) -> Check:
        t = time.monotonic()
        try:
            resp = self._client.post(f"/v2/models/{self.model}/infer", json=infer_body(case))
        except httpx.HTTPError as exc:
            return Check(t, case.name, False, False, None, f"no answer: {type(exc).__name__}")
        replica = resp.headers.get(REPLICA_HEADER)
        try:
            body = resp.json() if resp.status_code == 200 else None
        except ValueError:
            body = None
        if body is None:
            return Check(t, case.name, False, False, replica, f"HTTP {resp.status_code}, no valid answer")
        result = check_answer(case, body, replica)
        return Check(t, case.name, True, result.ok, replica, result.detail)


def golden_window(checks: Sequence[Check], start: float, end: float, examples: int = 3) -> GoldenWindow:
    inside = [c for c in checks if start <= c.t < end]
    answered = [c for c in inside if c.answered]
    wrong = [c for c in answered if not c.ok]
    return GoldenWindow(len(answered), len(wrong), len(inside) - len(answered),
                        tuple(f"{c.case}: {c.detail}" for c in wrong[:examples]))
