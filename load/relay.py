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

Trust: locust's master/worker channel has no authentication, and in a cluster anything that
reaches the master's port can connect as a worker. So the master takes nothing a worker
sends on faith: a message that is not the shape `Outbox` sends is dropped whole, and each
record is checked field by field (types, finite numbers, known kinds, bounded strings, the
sending worker's own name) before it enters the request log. What was dropped is counted
per worker, said once in the master's log, and makes that worker *lost* in the account, so
a verdict never silently rests on a log someone else wrote into.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

from inferchaos.load.records import FIELDS, KINDS, RequestRecord

RECORDS = "inferchaos_records"
DONE = "inferchaos_done"
#: the master's account of its workers, beside the request log.
WORKERS_SUFFIX = ".workers.json"
BATCH_RECORDS = 200
BATCH_INTERVAL_S = 0.2
#: what the master accepts in one message, at most (a batch is BATCH_RECORDS; the rest is margin).
MAX_BATCH_RECORDS = 10_000
MAX_IN_FLIGHT_STARTS = 100_000
#: a worker's name as `records.worker_id` makes it (hostname:pid), bounded.
WORKER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}:[0-9]{1,10}")
MAX_TEXT = 1000


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
    #: records (or whole messages) from this worker dropped as malformed.
    rejected: int = 0
    #: why the first of them was dropped.
    rejected_why: str = ""


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


class BadMessage(ValueError):
    """A message or record from a worker that is not what `Outbox` sends."""


class Inbox:
    """The master's side: `on_records`/`on_done` are the message handlers' bodies;
    `write` puts a record in the one request log; `say` gets one line the first time a
    worker's message or record is dropped as malformed."""

    def __init__(self, write: Callable[[RequestRecord], None], say: Callable[[str], None] | None = None) -> None:
        self.write = write
        self.say = say or (lambda _line: None)
        self.tallies: dict[str, WorkerTally] = {}
        self._boot = boot_id()

    def _reject(self, t: WorkerTally, count: int, why: str) -> None:
        first = not t.rejected
        t.rejected += max(1, count)
        if first:
            t.rejected_why = why[:200]
            self.say(f"inferchaos: load worker {t.worker or t.client_id}: dropped malformed data it sent "
                     f"({t.rejected_why}); later drops are counted, not logged")

    def tally(self, client_id: str) -> WorkerTally:
        if client_id not in self.tallies:
            self.tallies[client_id] = WorkerTally(client_id)
        return self.tallies[client_id]

    def on_records(self, client_id: str, data: Any, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        t = self.tally(client_id)
        try:
            worker, boot, mono, sent, records, in_flight = _envelope(data, t)
        except BadMessage as exc:
            self._reject(t, _count(data), f"message: {exc}")
            return
        t.worker, t.last_seen = worker, now
        if boot and boot == self._boot:
            t.offset = 0.0
        else:
            seen = now - mono
            t.offset = seen if t.offset is None else min(t.offset, seen)
        for d in records:
            try:
                r = record_from_wire(d, worker)
            except BadMessage as exc:
                self._reject(t, 1, str(exc))
                continue
            if t.offset:
                r = _shifted(r, t.offset)
            self.write(r)
            t.received += 1
        t.sent = max(t.sent, sent)
        t.in_flight = [s + (t.offset or 0.0) for s in in_flight]

    def on_done(self, client_id: str, data: Any, now: float | None = None) -> None:
        t = self.tally(client_id)
        try:
            if not isinstance(data, dict) or set(data) - {"worker", "sent"}:
                raise BadMessage("not a done message")
            worker, sent = _worker_name(data.get("worker"), t), _count_field(data.get("sent"), "sent")
        except BadMessage as exc:
            self._reject(t, 0, f"done: {exc}")
            return
        t.worker = worker
        t.sent, t.done = sent, True
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
                           "; ".join(filter(None, (reasons.get(t.client_id), _why_lost(t) if t.rejected else None)))
                           or _why_lost(t))
                for t in self.tallies.values() if not t.done or t.received < t.sent or t.rejected]

    def summary(self, reasons: dict[str, str] | None = None) -> dict[str, Any]:
        return {"workers": [{k: v for k, v in asdict(t).items() if k != "in_flight"} | {"in_flight": len(t.in_flight)}
                            for t in self.tallies.values()],
                "lost": [asdict(w) for w in self.lost(reasons)]}


def _why_lost(t: WorkerTally) -> str:
    if t.rejected:
        return f"{t.rejected} malformed record(s) or message(s) dropped ({t.rejected_why})"
    return "it never said done" if not t.done else f"{t.sent - t.received} records it sent never came"


# --------------------------------------------------------------------------- what a worker may send
_ENVELOPE_KEYS = frozenset({"worker", "boot", "mono", "sent", "records", "in_flight"})


def _count(data: Any) -> int:
    """How many records a dropped message claimed to carry (for the account)."""
    records = data.get("records") if isinstance(data, dict) else None
    return len(records) if isinstance(records, list) else 0


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _count_field(v: Any, name: str) -> int:
    if type(v) is not int or v < 0:
        raise BadMessage(f"{name} is not a count")
    return v


def _worker_name(v: Any, t: WorkerTally) -> str:
    """The name a worker gives itself: hostname:pid, and the same for the whole run (one
    connection cannot speak for another worker's records)."""
    if not isinstance(v, str) or not WORKER_NAME.fullmatch(v):
        raise BadMessage(f"worker {str(v)[:60]!r} is not hostname:pid")
    if t.worker and v != t.worker:
        raise BadMessage(f"worker {v!r} on the connection of {t.worker!r}")
    return v


def _envelope(data: Any, t: WorkerTally) -> tuple[str, str, float, int, list, list[float]]:
    if not isinstance(data, dict):
        raise BadMessage("not an object")
    if set(data) - _ENVELOPE_KEYS or not {"worker", "mono", "sent", "records"} <= set(data):
        raise BadMessage(f"fields {sorted(map(str, data))!r:.120}")
    worker = _worker_name(data["worker"], t)
    boot = data.get("boot") or ""
    if not isinstance(boot, str) or len(boot) > 64:
        raise BadMessage("boot is not a boot id")
    if not _is_number(data["mono"]) or data["mono"] < 0:
        raise BadMessage("mono is not a monotonic time")
    sent = _count_field(data["sent"], "sent")
    records, in_flight = data["records"], data.get("in_flight") or []
    if not isinstance(records, list) or len(records) > MAX_BATCH_RECORDS:
        raise BadMessage(f"records is not a list of at most {MAX_BATCH_RECORDS}")
    if not isinstance(in_flight, list) or len(in_flight) > MAX_IN_FLIGHT_STARTS \
            or not all(_is_number(s) for s in in_flight):
        raise BadMessage("in_flight is not a list of times")
    return worker, boot, float(data["mono"]), sent, records, [float(s) for s in in_flight]


def _opt(kind: Callable[[Any], bool], what: str) -> Callable[[str, Any], None]:
    def check(name: str, v: Any) -> None:
        if v is not None and not kind(v):
            raise BadMessage(f"{name} is not {what}")
    return check


def _req(kind: Callable[[Any], bool], what: str) -> Callable[[str, Any], None]:
    def check(name: str, v: Any) -> None:
        if not kind(v):
            raise BadMessage(f"{name} is not {what}")
    return check


def _text(limit: int) -> Callable[[Any], bool]:
    # any characters: an error may quote a server's own message (JSON escapes what it must)
    return lambda v: isinstance(v, str) and len(v) <= limit


_nonneg = lambda v: _is_number(v) and v >= 0  # noqa: E731
_int = lambda v: type(v) is int  # noqa: E731
_RECORD_CHECKS: dict[str, Callable[[str, Any], None]] = {
    "start": _req(_nonneg, "a monotonic time"),
    "wall": _req(_nonneg, "a wall-clock time"),
    "latency_s": _req(_nonneg, "a duration"),
    "kind": _req(lambda v: v in KINDS, f"one of {', '.join(KINDS)}"),
    "status": _req(lambda v: _int(v) and 0 <= v <= 999, "an HTTP status"),
    "ok": _req(lambda v: isinstance(v, bool), "true or false"),
    "error": _opt(_text(MAX_TEXT), "a short text"),
    "replica": _opt(_text(200), "a replica name"),
    "ttft_s": _opt(_nonneg, "a duration"),
    "feature_version": _opt(_int, "a whole number"),
    "feature_age_s": _opt(_is_number, "a number"),
    "worker": _req(lambda v: isinstance(v, str), "a worker name"),
    "prediction": _opt(_is_number, "a number"),
    "lag_s": _req(_nonneg, "a duration"),
    "tokens": _opt(lambda v: _int(v) and v >= 0, "a count"),
    "itl_ms": _opt(lambda v: isinstance(v, (list, tuple)) and len(v) <= 100_000 and all(_nonneg(x) for x in v),
                   "a list of durations"),
    "incomplete": _req(lambda v: isinstance(v, bool), "true or false"),
    "prompt": _opt(lambda v: _int(v) and v >= 0, "an index"),
    "text_sha": _opt(lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{1,64}", v) is not None, "a sha1 prefix"),
}
assert set(_RECORD_CHECKS) == set(FIELDS), "every record field is checked"


def record_from_wire(d: Any, worker: str) -> RequestRecord:
    """One record as a worker sent it, checked field by field (exactly the fields
    `RequestRecord.to_dict` gives, each of its type), and sent by `worker` itself."""
    if not isinstance(d, dict):
        raise BadMessage("a record is not an object")
    if set(d) != set(FIELDS):
        extra, missing = sorted(map(str, set(d) - set(FIELDS))), sorted(set(FIELDS) - set(d))
        raise BadMessage(f"record fields: unknown {extra!r:.60}, missing {missing!r:.60}")
    for name, check in _RECORD_CHECKS.items():
        check(name, d[name])
    if d["worker"] != worker:
        raise BadMessage(f"a record of worker {d['worker'][:60]!r} in the batch of {worker!r}")
    if d["ok"] and (d["status"] != 200 or d["error"] is not None):
        raise BadMessage("ok with an error or a status other than 200")
    return RequestRecord.from_dict(d)


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
