"""The ledger: an append-only journal of everything the suite changed, and its undo.

An entry is written *before* a change takes effect and closed *after* its undo ran, so a
runner killed at any moment leaves a ledger from which `inferchaos recover` can restore
the target: open entries are exactly the changes that may still be in force. Undo is
data (a list of `UndoStep`s), never code, so it survives the process that wrote it.

The file is the owner's alone (0600), and `recover` replays only steps that name one of
`faults.undo`'s executors with exactly its parameters (`faults.undo.validate`).

Lines are appended with `O_APPEND` under an exclusive lock and fsynced; a line cut short
by a crash is skipped on reading, and the entries before it are kept.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

DEFAULT_LEDGER = Path(".inferchaos/ledger.jsonl")
OPERATOR_ENV = "INFERCHAOS_OPERATOR"


@dataclass(frozen=True)
class UndoStep:
    """One idempotent step that puts something back. `op` names an executor in
    `faults.undo`; `args` are its JSON arguments."""

    op: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
    id: str
    event: str  # "applied" | "reverted" | "revert_failed"
    fault: str
    wall: float
    runner_pid: int
    target: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    undo: tuple[UndoStep, ...] = ()
    experiment: str | None = None
    detail: str | None = None
    #: the runner's start time (clock ticks since boot): with its pid, names it for good.
    runner_started: int | None = None
    #: who made the change (or reverted it): $INFERCHAOS_OPERATOR, else user@host. A game
    #: day's record says who pulled which lever when.
    operator: str | None = None

    def to_json(self) -> str:
        d = asdict(self)
        d["undo"] = [asdict(u) for u in self.undo]
        return json.dumps(d, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Entry:
        d = dict(d)
        d["undo"] = tuple(UndoStep(**u) for u in d.get("undo", ()))
        return cls(**d)


def operator() -> str:
    named = os.environ.get(OPERATOR_ENV, "").strip()
    if named:
        return named
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a uid with no passwd entry (a container)
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def _own_start_time() -> int | None:
    try:
        with open("/proc/self/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


class Ledger:
    def __init__(self, path: Path | str = DEFAULT_LEDGER) -> None:
        self.path = Path(path)

    def _append(self, entry: Entry, first: bool = False) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.fchmod(fd, 0o600)  # what it holds says how to reach the clusters it changed
            fcntl.flock(fd, fcntl.LOCK_EX)
            # A previous writer may have died mid-line: start ours on a fresh line.
            if os.fstat(fd).st_size and not self._ends_with_newline():
                os.write(fd, b"\n")
            os.write(fd, entry.to_json().encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        if entry.target.get("ledger"):  # a Kubernetes change: its run's ledger in the cluster too
            from inferchaos.faults.cluster_ledger import NotMirrored, mirror

            try:
                mirror(entry, first)
            except NotMirrored:
                # nothing was changed yet: the file must not keep an open entry nobody will close
                self._append(Entry(id=entry.id, event="reverted", fault=entry.fault, wall=time.time(),
                                   runner_pid=os.getpid(), detail="not applied: its cluster ledger was not written",
                                   operator=entry.operator))
                raise

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def applied(self, fault: str, undo: list[UndoStep], target: dict[str, Any] | None = None,
                params: dict[str, Any] | None = None, experiment: str | None = None,
                detail: str | None = None) -> Entry:
        """Journal a change about to be made. Call before the change, not after."""
        entry = Entry(
            id=uuid.uuid4().hex[:12], event="applied", fault=fault, wall=time.time(), runner_pid=os.getpid(),
            target=target or {}, params=params or {}, undo=tuple(undo), experiment=experiment,
            runner_started=_own_start_time(), detail=detail, operator=operator(),
        )
        self._append(entry, first=True)
        return entry

    def extend(self, entry: Entry, undo: list[UndoStep], detail: str | None = None) -> Entry:
        """Add undo steps learnt after the fact (a replica picked, a process started):
        re-journalled under the same id, so the newest copy is the one recovered.
        `detail` (e.g. "injected") marks the moment, for the report's timeline."""
        grown = Entry(**{**asdict(entry), "undo": entry.undo + tuple(undo), "wall": time.time(),
                         "detail": detail or entry.detail})
        self._append(grown)
        return grown

    def reverted(self, entry: Entry, ok: bool = True, detail: str | None = None) -> None:
        self._append(Entry(
            id=entry.id, event="reverted" if ok else "revert_failed", fault=entry.fault, wall=time.time(),
            runner_pid=os.getpid(), target=entry.target, experiment=entry.experiment, detail=detail,
            operator=operator(),
        ))

    def entries(self) -> Iterator[Entry]:
        try:
            lines = self.path.read_bytes().split(b"\n")
        except FileNotFoundError:
            return
        for line in lines:
            if not line.strip():
                continue
            try:
                yield Entry.from_dict(json.loads(line))
            except (json.JSONDecodeError, TypeError, KeyError):
                continue  # a line cut short by a crash

    def open_entries(self) -> list[Entry]:
        """Changes applied and not (successfully) reverted, newest copy of each."""
        return open_of(self.entries())


def open_of(entries: Iterable[Entry]) -> list[Entry]:
    """Of a ledger's entries in order: the changes applied and not (successfully) reverted,
    newest copy of each."""
    latest: dict[str, Entry] = {}
    for e in entries:
        if e.event == "applied":
            latest[e.id] = e
        elif e.event == "reverted":
            latest.pop(e.id, None)
    return list(latest.values())
