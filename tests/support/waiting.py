"""The one way the tests wait: poll until a condition holds or a generous deadline passes.

Deadlines here are ceilings, not measurements (speed is measured in bench/): a condition that
holds returns at once, so a long ceiling costs nothing on a fast machine and keeps a loaded CI
machine from failing a correct test."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout_s: float = 5.0, what: str = "the condition",
             interval_s: float = 0.02, tolerate: tuple[type[BaseException], ...] = ()) -> T:
    """Return `condition()`'s first truthy value; fail naming `what` at the deadline.

    `tolerate`: exceptions that mean "not yet" (a server still starting refuses connections)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = condition()
        except tolerate:
            value = None  # type: ignore[assignment]
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)
