"""The safeguard: a probe that runs throughout and stops the fault on a hard breach.

Chaos in staging must not turn into an outage. The engine feeds it the requests that
completed since its last look (several times a second) and the starts of those still out
(the load generator publishes them), and asks whether the last `window_s` breaks hard
limits looser than the SLOs. A request still out counts with its age so far: a hang
leaves no record until it ends, and judging only answers would never see it. A window
with requests out and no answer at all is an outage whatever the limits. On a breach the
engine reverts the fault first and then fails the run as "aborted".
"""

from __future__ import annotations

import time
from collections import deque
from typing import Iterable, Protocol

from inferchaos.probes.window import percentile


class Record(Protocol):
    start: float
    latency_s: float
    ok: bool


class Safeguard:
    def __init__(self, max_error_rate: float, window_s: float, max_p99_ms: float | None = None,
                 min_requests: int = 10) -> None:
        self.max_error_rate, self.window_s, self.max_p99_ms = max_error_rate, window_s, max_p99_ms
        self.min_requests = min_requests
        self.tripped: str | None = None
        self._recent: deque[Record] = deque()
        self._out: list[float] = []

    def feed(self, records: Iterable[Record], in_flight: Iterable[float] | None = None) -> None:
        """Completed records since the last feed; `in_flight`: the starts of every request
        still out now (None keeps the last known)."""
        self._recent.extend(records)
        if in_flight is not None:
            self._out = list(in_flight)

    def recent(self, now: float | None = None) -> list[Record]:
        now = time.monotonic() if now is None else now
        while self._recent and self._recent[0].start < now - 4 * self.window_s:
            self._recent.popleft()
        return [r for r in self._recent if r.start >= now - self.window_s]

    def check(self, now: float | None = None) -> str | None:
        """Judge the last window; the first breach is kept in `tripped`."""
        now = time.monotonic() if now is None else now
        window = self.recent(now)
        out = [now - s for s in self._out if s <= now]
        breach = None
        answered = any(r.start + r.latency_s >= now - self.window_s for r in self._recent)
        if not answered and out and max(out) >= self.window_s:
            breach = (f"safeguard: no answer in the last {self.window_s:g}s while {len(out)} requests are out "
                      f"(the oldest for {max(out):.1f} s)")
        if breach is None and len(window) + len(out) < self.min_requests:
            return None
        errors = sum(not r.ok for r in window) / len(window) if window else 0.0
        if breach is None and errors > self.max_error_rate:
            breach = (f"safeguard: error rate {errors:.0%} over the last {self.window_s:g}s "
                      f"exceeds the hard limit {self.max_error_rate:.0%}")
        elif breach is None and self.max_p99_ms is not None:
            p99 = percentile([r.latency_s * 1000 for r in window] + [a * 1000 for a in out], 99)
            if p99 is not None and p99 > self.max_p99_ms:
                hung = sum(a * 1000 > self.max_p99_ms for a in out)
                breach = (f"safeguard: p99 {p99:.0f} ms over the last {self.window_s:g}s "
                          f"exceeds the hard limit {self.max_p99_ms:g} ms"
                          + (f" ({hung} requests still out longer than that)" if hung else ""))
        if breach and self.tripped is None:
            self.tripped = breach
        return breach
