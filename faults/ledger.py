"""The ledger: an append-only journal of everything the suite changed, and its undo.

An entry is written *before* a change takes effect and closed *after* its undo ran, so a
runner killed at any moment leaves a ledger from which `inferchaos recover` can restore
the target: open entries are exactly the changes that may still be in force. Undo is
data (a list of `UndoStep`s), never code, so it survives the process that wrote it.

The file is the owner's alone (0600, in a directory only the owner can change): one that
another user could have written is refused whole (`targets.ownership`). Even then its
contents are input, not authority: every entry is type-checked as it is parsed, and
`recover` replays only steps that name one of `faults.undo`'s executors with exactly its
parameters, each of which proves from the object itself that the suite made it.

Lines are appended with `O_APPEND` under an exclusive lock and fsynced; a line cut short
by a crash is skipped on reading, and the entries before it are kept.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import math
import os
import re
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Iterator

from inferchaos.ground.errors import FaultError
from inferchaos.ground.procs import start_time
from inferchaos.targets.ownership import check_open_file, check_private, private_dir

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
    def from_dict(cls, d: Any) -> Entry:
        """An entry read back from disk or a ConfigMap: every field of its type, or ValueError."""
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(sorted(map(str, unknown)))[:80]}")
        for name, (kind, required) in _SHAPE.items():
            value = d.get(name)
            if value is None:
                if required:
                    raise ValueError(f"no {name}")
                continue
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"{name} is not {kind.__name__ if isinstance(kind, type) else 'a number'}")
        if not ID.fullmatch(d["id"]) or not NAME.fullmatch(d["fault"]):
            raise ValueError("id or fault is not a name the suite writes")
        if not all(str(d.get(k) or "").isprintable() for k in ("operator", "experiment")):
            raise ValueError("operator or experiment holds control characters")  # watch prints them
        if d["event"] not in EVENTS:
            raise ValueError(f"event is not one of {', '.join(EVENTS)}")
        if not math.isfinite(d["wall"]) or d["runner_pid"] <= 0:
            raise ValueError("wall or runner_pid out of range")
        undo = d.get("undo") or []
        if not all(isinstance(u, dict) and set(u) <= {"op", "args"} and isinstance(u.get("op"), str)
                   and isinstance(u.get("args", {}), dict) for u in undo):
            raise ValueError("undo is not a list of {op, args}")
        return cls(**{**d, "undo": tuple(UndoStep(u["op"], u.get("args", {})) for u in undo),
                      "target": d.get("target") or {}, "params": d.get("params") or {}})


#: what an entry's fields must be, and whether it must have them.
_SHAPE: dict[str, tuple[Any, bool]] = {
    "id": (str, True), "event": (str, True), "fault": (str, True), "wall": ((int, float), True),
    "runner_pid": (int, True), "target": (dict, False), "params": (dict, False), "undo": (list, False),
    "experiment": (str, False), "detail": (str, False), "runner_started": (int, False), "operator": (str, False),
}
ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
EVENTS = ("applied", "reverted", "revert_failed")


def operator() -> str:
    named = "".join(c for c in os.environ.get(OPERATOR_ENV, "") if c.isprintable()).strip()
    if named:
        return named
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a uid with no passwd entry (a container)
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


class Ledger:
    def __init__(self, path: Path | str = DEFAULT_LEDGER) -> None:
        self.path = Path(path)
        #: the lines of the last reading that were not entries, one line of why each.
        self.refused: list[str] = []

    def _append(self, entry: Entry, first: bool = False) -> None:
        private_dir(self.path.parent, "the ledger's directory")
        check_private(self.path, "file", "the ledger")
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        try:
            check_open_file(fd, self.path, "the ledger")
            os.fchmod(fd, 0o600)  # what it holds says what the suite changed, and where
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
            runner_started=start_time(os.getpid()), detail=detail, operator=operator(),
        )
        self._append(entry, first=True)
        return entry

    def extend(self, entry: Entry, undo: list[UndoStep], detail: str | None = None) -> Entry:
        """Add undo steps learnt after the fact (a replica picked, a process started):
        re-journalled under the same id, so the newest copy is the one recovered.
        `detail` (e.g. "injected") marks the moment, for the report's timeline.

        An entry already reverted (a kill switch, `inject --for`'s timer) is never reopened:
        the change it would journal must not be made, so this raises instead."""
        if not any(e.id == entry.id for e in self.open_entries()):
            raise FaultError(f"{entry.fault} {entry.id} was reverted meanwhile: nothing more is changed")
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
        """The entries, each type-checked; a line that is not one is kept in `refused` (a
        line cut short by a crash, the last one, is skipped without a word)."""
        self.refused: list[str] = []
        check_private(self.path, "file", "the ledger")
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return
        try:
            check_open_file(fd, self.path, "the ledger")
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read()
        finally:
            os.close(fd)
        lines = data.split(b"\n")
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                yield Entry.from_dict(json.loads(line))
            except (json.JSONDecodeError, UnicodeDecodeError, ValueError, TypeError) as exc:
                if n < len(lines):  # the last line, unterminated, is one a crash cut short
                    self.refused.append(f"{self.path} line {n}: not a ledger entry ({exc}): refused")

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
