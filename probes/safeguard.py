"""The safeguard: a probe that runs throughout and stops the fault on a hard breach.

Chaos in staging must not turn into an outage. The engine feeds it the requests that
completed since its last look (several times a second) and asks whether the last
`window_s` breaks hard limits looser than the SLOs. On a breach the engine reverts the
fault first and then fails the run as "aborted".
"""

from __future__ import annotations

import time
from collections import deque
from typing import Iterable, Protocol

from probes.window import percentile


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

    def feed(self, records: Iterable[Record]) -> None:
        self._recent.extend(records)

    def recent(self, now: float | None = None) -> list[Record]:
        now = time.monotonic() if now is None else now
        while self._recent and self._recent[0].start < now - 4 * self.window_s:
            self._recent.popleft()
        return [r for r in self._recent if r.start >= now - self.window_s]

    def check(self, now: float | None = None) -> str | None:
        """Judge the last window; the first breach is kept in `tripped`."""
        window = self.recent(now)
        if len(window) < self.min_requests:
            return None
        errors = sum(not r.ok for r in window) / len(window)
        breach = None
        if errors > self.max_error_rate:
            breach = (f"safeguard: error rate {errors:.0%} over the last {self.window_s:g}s "
                      f"exceeds the hard limit {self.max_error_rate:.0%}")
        elif self.max_p99_ms is not None:
            p99 = percentile([r.latency_s * 1000 for r in window], 99)
            if p99 is not None and p99 > self.max_p99_ms:
                breach = (f"safeguard: p99 {p99:.0f} ms over the last {self.window_s:g}s "
                          f"exceeds the hard limit {self.max_p99_ms:g} ms")
        if breach and self.tripped is None:
            self.tripped = breach
        return breach
