"""What the person at the keyboard sees while an experiment runs.

Two kinds of output: events (a phase starts, the plan, a safeguard trips) are lines that
stay; the status (phase, seconds left, requests/s, errors, p99, replicas ready) changes
every tick. On a terminal the status is one line refreshed in place; in a log (CI, a pipe)
a refreshed line is noise, so it becomes a plain line every few seconds instead.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable, TextIO

CLEAR = "\r\x1b[K"


@dataclass(frozen=True)
class Status:
    experiment: str
    phase: str
    left_s: float
    rps: float
    errors: int
    p99_ms: float | None
    ready: int
    replicas: int

    def line(self) -> str:
        p99 = f"{self.p99_ms:.0f} ms" if self.p99_ms is not None else "-"
        return (f"{self.experiment}: {self.phase:<8} {self.left_s:5.1f}s left  {self.rps:6.1f} req/s  "
                f"errors {self.errors}  p99 {p99}  replicas ready {self.ready}/{self.replicas}")


class Progress:
    """Events and a live status on one output.

    `line(text)` writes a whole line that stays. `raw(text)` writes text as it is and is
    given only when the output is a terminal: then the status is redrawn in place (with
    `CLEAR`) every `refresh_s`; without it, the status is a plain line every `every_s`.
    """

    def __init__(self, line: Callable[[str], None], raw: Callable[[str], None] | None = None,
                 every_s: float = 2.0, refresh_s: float = 0.5, clock: Callable[[], float] = time.monotonic) -> None:
        self._line, self._raw = line, raw
        self.every_s, self.refresh_s, self._clock = every_s, refresh_s, clock
        self._last = float("-inf")
        self._showing = False

    @property
    def tty(self) -> bool:
        return self._raw is not None

    @classmethod
    def to_stream(cls, stream: TextIO | None = None) -> Progress:
        out = stream or sys.stderr

        def raw(text: str) -> None:
            out.write(text)
            out.flush()

        return cls(lambda text: raw(text + "\n"), raw if out.isatty() else None)

    def say(self, line: str) -> None:
        """An event: a line that stays, above the live status."""
        self._clear()
        self._line(line)

    def status(self, status: Status, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._last < (self.refresh_s if self.tty else self.every_s):
            return
        self._last = now
        if self._raw is not None:
            self._raw(CLEAR + status.line())
            self._showing = True
        else:
            self._line(status.line())

    def done(self) -> None:
        """Clear the live status so what follows starts on a clean line."""
        self._clear()

    def _clear(self) -> None:
        if self._showing and self._raw is not None:
            self._raw(CLEAR)
            self._showing = False
