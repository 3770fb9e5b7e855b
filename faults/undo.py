"""Undo steps: the closed set of executors a ledger may name, and how a step is run.

Every executor is idempotent (running it twice, or on a target already restored, is
harmless) and proves from the object itself that the suite made it before acting
(`undo_local`, `undo_kube`). A step is checked here first: a known executor, exactly its
parameters, of their types, strings printable and short.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any, Callable, get_type_hints

from inferchaos.ground.errors import FaultError, UsageError
from inferchaos.faults.ledger import UndoStep
from inferchaos.faults.undo_kube import (check_conn, kube_connection, kube_delete_custom, kube_end_hog,
                                         kube_node, kube_resume, kube_scale, use, via, within)
from inferchaos.faults.undo_local import (clear_perturbation, clear_toxics, disarm_cuda, end_group, end_marked,
                                          group_ref, process_ref, restore_desired, signal_process, stop_cluster)

Executor = Callable[..., str]


EXECUTORS: dict[str, Executor] = {
    "end_group": end_group,
    "end_marked": end_marked,
    "signal_process": signal_process,
    "restore_desired": restore_desired,
    "stop_cluster": stop_cluster,
    "clear_toxics": clear_toxics,
    "clear_perturbation": clear_perturbation,
    "disarm_cuda": disarm_cuda,
    "kube_node": kube_node,
    "kube_scale": kube_scale,
    "kube_delete_custom": kube_delete_custom,
    "kube_resume": kube_resume,
    "kube_end_hog": kube_end_hog,
}


def validate(step: UndoStep) -> None:
    """A step read from a ledger file is data from disk: it names one of the executors above,
    with exactly its parameters, of their types. Nothing else is run (no argv, no code)."""
    executor = EXECUTORS.get(step.op)
    if executor is None:
        raise FaultError(f"unknown undo step {step.op!r} in the ledger: refused")
    hints = get_type_hints(executor)
    params = inspect.signature(executor).parameters
    required = {n for n, p in params.items() if p.default is inspect.Parameter.empty}
    unknown, missing = set(step.args) - set(params), required - set(step.args)
    if unknown or missing:
        raise FaultError(f"undo step {step.op}: "
                         + (f"unexpected {', '.join(sorted(unknown))}" if unknown else "")
                         + ("; " if unknown and missing else "")
                         + (f"missing {', '.join(sorted(missing))}" if missing else "") + ": refused")
    for name, value in step.args.items():
        if not _fits(value, hints.get(name, Any)):
            raise FaultError(f"undo step {step.op}: {name}={repr(value)[:80]} is not {hints.get(name)}: refused")
    if "conn" in step.args:
        try:
            check_conn(step.args["conn"])
        except FaultError as exc:
            raise FaultError(f"undo step {step.op}: {exc}") from None
    bad = next((v for v in _strings(step.args) if len(v) > 512 or not v.isprintable()), None)
    if bad is not None:
        raise FaultError(f"undo step {step.op}: a value holds control characters or is too long: refused")


def _strings(value: Any) -> typing.Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _fits(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def run_step(step: UndoStep) -> str:
    validate(step)
    executor = EXECUTORS[step.op]
    try:
        return executor(**step.args)
    except FaultError:
        raise
    except UsageError as exc:  # a private file that is not, a context that is not there
        raise FaultError(f"undo step {step.op}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - reported per step, recover goes on
        raise FaultError(f"undo step {step.op} failed: {exc}") from exc


def run_all(steps: "typing.Sequence[UndoStep]", done: Callable[[str], None]) -> None:
    """Every step, newest first, whatever the others did: a failed untaint must not leave
    the node cordoned. Each failure is reported; together they fail the revert."""
    failures = []
    for undo in reversed(steps):
        try:
            done(run_step(undo))
        except FaultError as exc:
            failures.append(str(exc))
    if failures:
        raise FaultError(f"{len(failures)} of {len(steps)} undo step(s) failed: " + "; ".join(failures))


#: the steps a ledger kept in a cluster may hold: that cluster's, nothing of any machine's.
KUBE_OPS = frozenset(op for op in EXECUTORS if op.startswith("kube_"))

__all__ = ["KUBE_OPS", "group_ref", "EXECUTORS", "kube_connection", "process_ref", "run_all", "run_step", "step", "use", "validate", "via",
           "within"]


def step(op: str, **args: Any) -> UndoStep:
    made = UndoStep(op, args)
    validate(made)  # a step the ledger could not replay is a bug here, not at recover time
    return made
