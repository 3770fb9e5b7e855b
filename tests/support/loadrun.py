"""Reading a running load: its records as they are written."""

from __future__ import annotations

from inferchaos.load.records import RequestRecord
from inferchaos.load.runner import LoadRunner
from tests.support.waiting import wait_for


def collect(load: LoadRunner, enough, timeout_s: float = 20.0) -> list[RequestRecord]:
    """Read the live tail until `enough(records)` holds."""
    tail, seen = load.tail(), []

    def more():
        seen.extend(tail())
        return enough(seen)
    wait_for(more, timeout_s, "enough request records in the live log", interval_s=0.1)
    return seen
