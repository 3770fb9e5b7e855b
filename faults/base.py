"""The executor protocol: plan, prepare, inject, landed, revert — with a journal.

A fault is a spec (faults/spec.py: what, with which parameters) and one executor per target
(how, on this target). `Fault` is the executor's base and does the bookkeeping every one
shares: the ledger entry is opened before the first change (with the undo known so far),
extended as the executor learns what it touched, and closed only after the undo ran;
`revert()` is safe to call any number of times, from `finally`, a signal handler or the
safeguard. Executors implement `_plan`, `_prepare` (optional), `_inject`, `landed` and, when
replaying their journal is not all, `_revert`; they declare no parameters of their own:
`self.args` holds what the spec checked.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from inferchaos.faults.ledger import Entry, Ledger, UndoStep

if TYPE_CHECKING:
    from inferchaos.faults.spec import Args, FaultSpec


@dataclass(frozen=True)
class FaultEvent:
    """Something the fault did or saw, on the monotonic clock (e.g. "sigkill replica-2")."""

    t: float
    what: str
    subject: str = ""


@dataclass(frozen=True)
class Landing:
    """Whether the fault's effect shows on the target, read back from the target itself
    (a process state, the LB, the memory ledger, a timed request through the path), and
    what was seen. A fault that did not land proves nothing, so it gets no verdict."""

    ok: bool
    evidence: str


@dataclass(frozen=True)
class RunContext:
    """What a fault may know of the experiment it runs in (a surge adds load to it). The
    load layer sits above the faults: its profile and its runner are handed in, not imported."""

    lb_url: str
    out_dir: Path
    #: the experiment's own load (a load.runner.LoadProfile): a surge multiplies it.
    load: Any
    #: how to start more of it: load.runner.LoadRunner(url, log, profile, log_locust_to=...).
    runner: Callable[..., Any]


@dataclass
class Fault:
    """Base of every executor: a fault's spec, carried out on one target."""

    spec: FaultSpec
    target: Any
    #: the parameters, checked by the spec for this target's kind, defaults filled in.
    args: Args
    ledger: Ledger = field(default_factory=Ledger, repr=False)
    experiment: str | None = None
    events: list[FaultEvent] = field(default_factory=list, init=False, repr=False)
    #: Set by the engine before prepare().
    run: RunContext | None = field(default=None, init=False, repr=False)
    _entry: Entry | None = field(default=None, init=False, repr=False)
    _reverted: bool = field(default=False, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def name(self) -> str:
        return self.spec.name

    def validate(self) -> None:
        """What this target cannot do with otherwise valid parameters; one UsageError line.
        Reads nothing of the target's state: that is the plan's business."""

    # ---------------------------------------------------------------- public protocol
    def plan(self) -> list[str]:
        """What would be done, to which objects, in plain lines. Changes nothing."""
        return self._plan()

    def prepare(self) -> None:
        """Changes needed before the baseline (e.g. a warm pool); journalled."""
        self._open()
        self._prepare()

    def inject(self) -> None:
        if self._entry is None:
            self._entry = self.ledger.applied(self.name, [], self.target_ref(), self.params(), self.experiment,
                                              detail="injected")
        else:  # opened by prepare(): the ledger still says when the fault itself began
            self._entry = self.ledger.extend(self._entry, [], detail="injected")
        self._inject()

    def revert(self) -> None:
        """Undo everything; idempotent and thread-safe."""
        with self._lock:
            if self._reverted or self._entry is None:
                return
            self._reverted = True
            try:
                self._revert()
            except Exception as exc:
                self.ledger.reverted(self._entry, ok=False, detail=str(exc))
                raise
            self.ledger.reverted(self._entry)
            self.note("reverted")

    @property
    def applied(self) -> bool:
        return self._entry is not None and not self._reverted

    def note(self, what: str, subject: str = "") -> None:
        self.events.append(FaultEvent(time.monotonic(), what, subject))

    def first(self, what: str, subject: str | None = None) -> FaultEvent | None:
        return next((e for e in self.events if e.what == what and (subject is None or e.subject == subject)), None)

    def journal(self, undo: list[UndoStep]) -> None:
        """Record more undo *before* making the change it undoes."""
        assert self._entry is not None, "journal() before prepare()/inject()"
        self._entry = self.ledger.extend(self._entry, undo)

    # ---------------------------------------------------------------- for subclasses
    def params(self) -> dict[str, Any]:
        """What the ledger records of the parameters: all of them, as given or defaulted."""
        return dict(self.args)

    def load_runners(self) -> list[Any]:
        """Load generators the fault started (a surge); the engine reads their request logs
        with its own, so the probes judge everything the clients saw."""
        return []

    def figures(self) -> dict[str, Any]:
        """What the fault measured on the target to prove it took effect (reported)."""
        return {}

    def settle(self) -> None:
        """Finish what the executor's own threads still hold (a reclamation's kill at its
        notice deadline), then stop them: `inject` by hand ends its process right after."""

    #: how long after inject() its effect may take to show (a notice, a replacement's start).
    land_within_s: ClassVar[float] = 5.0

    def landed(self) -> Landing:
        """The effect this fault must produce, measured on the target now. Called
        repeatedly after inject() until it holds or `land_within_s` passed; cheap and
        read-only. A fault that declares no effect never lands."""
        return Landing(False, f"{self.name} declares no effect to verify")

    def target_ref(self) -> dict[str, Any]:
        return {}

    def _open(self) -> None:
        if self._entry is None:
            self._entry = self.ledger.applied(self.name, [], self.target_ref(), self.params(), self.experiment)

    def _plan(self) -> list[str]:
        raise NotImplementedError

    def _prepare(self) -> None:
        pass

    def _inject(self) -> None:
        raise NotImplementedError

    def _revert(self) -> None:
        """By default, replay the journalled undo, newest first: the very steps
        `inferchaos recover` would run, so the two paths cannot drift apart."""
        from inferchaos.faults.undo import run_all

        assert self._entry is not None
        run_all(self._entry.undo, lambda done: self.note("undo", done))
