"""Request records over locust's own messaging, from worker processes to the master.

With `processes = N > 1` the runner starts locust as a master and N `--worker` processes
(in a cluster: the worker pods). The request event fires on the workers, but a pod's
disk is not the runner's, and one log is what the engine reads: so each worker batches
its records (`Outbox`) and sends them as `inferchaos_records` messages; the master's
`Inbox` writes them into its one request log. At the stop each worker drains, sends its
last batch and an `inferchaos_done` message with how many records it sent in all; the
master waits (bounded) for every worker's done. A worker that never says done (SIGKILLed,
its pod evicted, cut off) is *lost*: the master names it, with what it had sent, in
`<log>.workers.json` and its log; the runner reads it back (`LoadRunner.lost_workers()`).

Clocks: a record's `start` is CLOCK_MONOTONIC of the worker's host. A worker on the
master's host (same boot id) keeps it; one on another host is shifted onto the master's
clock by the smallest (receive - send) seen, which errs late by the transit time only.

Nothing here imports locust: the locustfile passes `send` in, and tests drive it bare.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

from inferchaos.load.records import RequestRecord

RECORDS = "inferchaos_records"
DONE = "inferchaos_done"
#: the master's account of its workers, beside the request log.
WORKERS_SUFFIX = ".workers.json"
BATCH_RECORDS = 200
BATCH_INTERVAL_S = 0.2


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def workers_path(prefix: Path | str) -> Path:
    return Path(f"{prefix}{WORKERS_SUFFIX}")


class Outbox:
    """A worker's records on their way to the master: sent every `interval_s`, or as soon
    as `batch_records` are waiting. Every batch also carries the starts of the requests
    still out, so the master can publish them (the safeguard sees a hang before any record)."""

    def __init__(self, send: Callable[[str, dict], None], worker: str,
                 batch_records: int = BATCH_RECORDS, interval_s: float = BATCH_INTERVAL_S) -> None:
        self.send, self.worker = send, worker
        self.batch_records, self.interval_s = batch_records, interval_s
        self.sent = 0
        self.done = False
        self._pending: list[dict[str, Any]] = []
        self._last = time.monotonic()
        self._boot = boot_id()

    def add(self, record: RequestRecord) -> None:
        self._pending.append(record.to_dict())
        if len(self._pending) >= self.batch_records:
            self.flush()

    def due(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) - self._last >= self.interval_s

    def flush(self, in_flight: Iterable[float] = ()) -> None:
        """Send what is waiting (an empty batch too: it says the worker is alive and what is out)."""
        batch, self._pending = self._pending, []
        self.sent += len(batch)
        self._last = time.monotonic()
        self.send(RECORDS, {"worker": self.worker, "boot": self._boot, "mono": self._last, "sent": self.sent,
                            "records": batch, "in_flight": sorted(round(s, 4) for s in in_flight)})

    def finish(self) -> None:
        """The last batch, then done with the count of every record sent."""
        if self.done:
            return
        self.flush()
        self.done = True
        self.send(DONE, {"worker": self.worker, "sent": self.sent})


@dataclass
class WorkerTally:
    """What the master knows of one worker."""

    client_id: str
    worker: str = ""
    #: records the worker says it had sent by its last message.
    sent: int = 0
    received: int = 0
    done: bool = False
    #: master's monotonic time of its last message.
    last_seen: float = 0.0
    in_flight: list[float] = field(default_factory=list)
    offset: float | None = None  # added to the worker's clock: the master's


@dataclass(frozen=True)
class LostWorker:
    """A worker that never said done: its records past `received` (and what it had in
    flight, `in_flight`) are not in the log."""

    worker: str
    client_id: str
    sent: int
    received: int
    in_flight: int
    reason: str

    def describe(self) -> str:
        return (f"load worker {self.worker or self.client_id} lost ({self.reason}): {self.sent} records sent, "
                f"{self.received} received, {self.in_flight} requests in flight unaccounted for")


class Inbox:
    """The master's side: `on_records`/`on_done` are the message handlers' bodies;
    `write` puts a record in the one request log."""

    def __init__(self, write: Callable[[RequestRecord], None]) -> None:
        self.write = write
        self.tallies: dict[str, WorkerTally] = {}
        self._boot = boot_id()

    def tally(self, client_id: str) -> WorkerTally:
        if client_id not in self.tallies:
            self.tallies[client_id] = WorkerTally(client_id)
        return self.tallies[client_id]

    def on_records(self, client_id: str, data: dict[str, Any], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        t = self.tally(client_id)
        t.worker, t.last_seen = str(data.get("worker") or t.worker), now
        if data.get("boot") and data.get("boot") == self._boot:
            t.offset = 0.0
        else:
            seen = now - float(data["mono"])
            t.offset = seen if t.offset is None else min(t.offset, seen)
        for d in data.get("records", ()):
            r = RequestRecord.from_dict(d)
            if t.offset:
                r = _shifted(r, t.offset)
            self.write(r)
            t.received += 1
        t.sent = max(t.sent, int(data.get("sent") or 0))
        t.in_flight = [s + (t.offset or 0.0) for s in data.get("in_flight", ())]

    def on_done(self, client_id: str, data: dict[str, Any], now: float | None = None) -> None:
        t = self.tally(client_id)
        t.worker = str(data.get("worker") or t.worker)
        t.sent, t.done = int(data.get("sent") or 0), True
        t.in_flight = []
        t.last_seen = time.monotonic() if now is None else now

    def in_flight(self) -> list[float]:
        return sorted(s for t in self.tallies.values() if not t.done for s in t.in_flight)

    def waiting(self, client_ids: Iterable[str]) -> list[str]:
        """Of `client_ids`, those that have not said done."""
        return [c for c in client_ids if not self.tally(c).done]

    def lost(self, reasons: dict[str, str] | None = None) -> list[LostWorker]:
        reasons = reasons or {}
        return [LostWorker(t.worker, t.client_id, t.sent, t.received, len(t.in_flight),
                           reasons.get(t.client_id) or ("it never said done" if not t.done else
                                                        f"{t.sent - t.received} records it sent never came"))
                for t in self.tallies.values() if not t.done or t.received < t.sent]

    def summary(self, reasons: dict[str, str] | None = None) -> dict[str, Any]:
        return {"workers": [{k: v for k, v in asdict(t).items() if k != "in_flight"} | {"in_flight": len(t.in_flight)}
                            for t in self.tallies.values()],
                "lost": [asdict(w) for w in self.lost(reasons)]}


def _shifted(r: RequestRecord, offset: float) -> RequestRecord:
    return replace(r, start=r.start + offset)


def write_summary(prefix: Path | str, summary: dict[str, Any]) -> None:
    path = workers_path(prefix)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=1))
    os.replace(tmp, path)


def read_lost(prefix: Path | str) -> list[LostWorker]:
    """The lost workers the master named at its end ([] when it wrote no account)."""
    try:
        data = json.loads(workers_path(prefix).read_text())
    except (OSError, ValueError):
        return []
    return [LostWorker(**w) for w in data.get("lost", ())]
