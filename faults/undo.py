"""Executors for undo steps: how recorded undo data is turned back into actions.

Every executor is idempotent (running it twice, or on a target already restored, is
harmless) and checks identity before acting: a process is named by pid *and* start time.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import signal
import types
import typing
from pathlib import Path
from typing import Any, Callable, Iterator, get_type_hints

from inferchaos.faults.ledger import UndoStep
from inferchaos.errors import FaultError
from inferchaos.targets.local.control import replace_desired
from inferchaos.targets.local.processes import end_groups, group_alive, signal_group, start_time

Executor = Callable[..., str]


def _same_process(pid: int, started: int | None) -> bool:
    return started is not None and start_time(pid) == started


def end_group(pgid: int, started: int | None = None, what: str = "process group") -> str:
    if not group_alive(pgid):
        return f"{what} {pgid}: already gone"
    if start_time(pgid) is not None and not _same_process(pgid, started):
        return f"{what} {pgid}: pid reused by another process, left alone"
    end_groups([pgid], grace_s=3.0)
    return f"{what} {pgid}: ended"


def end_marked(mark: str, what: str = "process") -> str:
    """End the process groups of whatever was started under `mark` (journalled before the
    start, so a crash between the start and its pid's journal leaves nothing behind)."""
    from inferchaos.targets.local.processes import marked

    groups = sorted({g for g in map(_pgid_or_none, marked(mark)) if g is not None and g != os.getpgrp()})
    if not groups:
        return f"{what}: none running"
    end_groups(groups, grace_s=3.0)
    return f"{what}: ended {len(groups)} process group(s)"


def _pgid_or_none(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


#: the signals an undo step may send: resuming, or ending what the suite started.
UNDO_SIGNALS = frozenset({"SIGCONT", "SIGTERM", "SIGKILL"})


def signal_process(pid: int, started: int | None, sig: str, what: str = "process") -> str:
    if sig not in UNDO_SIGNALS:
        raise FaultError(f"{what} {pid}: an undo step may not send {sig!r}")
    if not _same_process(pid, started):
        return f"{what} {pid}: gone, nothing to do"
    signal_group(pid, getattr(signal, sig))
    return f"{what} {pid}: sent {sig}"


def restore_desired(state_dir: str, values: dict[str, Any]) -> str:
    replace_desired(state_dir, values)
    return f"cluster {state_dir}: runtime settings restored to {values or 'the spec'}"


def clear_toxics(proxy_url: str, route: str) -> str:
    import httpx

    from inferchaos.targets.local.depproxy import ProxyControl

    try:
        ProxyControl(proxy_url).clear(route)
    except httpx.ConnectError:
        return f"dependency proxy {proxy_url}: gone (its cluster stopped), nothing to clear"
    return f"dependency proxy {proxy_url}: {route} restored to full speed"


def clear_perturbation(port: int, pid: int, started: int | None, what: str = "replica") -> str:
    import httpx

    from inferchaos.targets.local.server import PERTURB_PATH

    if not _same_process(pid, started):
        return f"{what}: gone, nothing to clear"
    try:
        httpx.delete(f"http://127.0.0.1:{port}{PERTURB_PATH}", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        raise FaultError(f"{what}: could not stop perturbing its outputs: {exc}") from None
    return f"{what}: answers exact again"


@contextlib.contextmanager
def via(connection: Any) -> Iterator[None]:
    """Undo Kubernetes steps through `connection` (the operator's own kubeconfig, or the
    in-cluster account) instead of the one recorded, which names another machine's files.
    The cluster is still the recorded one: its identity is checked before anything."""
    _VIA.append(connection)
    try:
        yield
    finally:
        _VIA.pop()


_VIA: list[Any] = []


def kube_connection(conn: dict) -> Any:
    return _kube(conn)


def _kube(conn: dict) -> Any:
    """The connection an undo step recorded, checked to reach the cluster it was made on."""
    from inferchaos.targets.kubernetes import Connection

    c = Connection(**conn)
    if _VIA:
        c = Connection(_VIA[-1].kubeconfig, _VIA[-1].context, c.cluster)
    key = (c.kubeconfig, c.context, c.cluster)
    if key not in _PINNED:
        c.pinned().close()
        _PINNED.add(key)
    return c


_PINNED: set[tuple[str | None, str, str | None]] = set()


def kube_node(conn: dict, node: str, run: str) -> str:
    """Uncordon (if this run cordoned it), drop this run's taint and its marks."""
    from inferchaos.targets.kubernetes import nodes

    return nodes.release(_kube(conn), node, run)


def kube_scale(conn: dict, namespace: str, deployment: str, replicas: int) -> str:
    from inferchaos.targets.kubernetes import ops
    from inferchaos.targets.kubernetes.nodes import EXPIRES, RUN
    from inferchaos.targets.kubernetes.sweep import RESTORE

    c = _kube(conn)
    done = ops.scale(c, namespace, deployment, replicas)
    ops.annotate_deployment(c, namespace, deployment, {RESTORE: None, EXPIRES: None, RUN: None})
    return done


def kube_delete_custom(conn: dict, group: str, version: str, namespace: str, plural: str, name: str) -> str:
    from inferchaos.targets.kubernetes import ops

    return ops.delete_custom(_kube(conn), group, version, namespace, plural, name)


def kube_resume(conn: dict, namespace: str, pod: str, container: str, pid: int, started: int) -> str:
    """SIGCONT to the process a hang stopped, if it is still that process (pid and start time)."""
    from inferchaos.targets.kubernetes import processes

    return processes.resume(_kube(conn), namespace, pod, container, pid, started)


def kube_end_hog(conn: dict, namespace: str, pod: str, container: str) -> str:
    from inferchaos.targets.kubernetes import processes

    return processes.end_hog(_kube(conn), namespace, pod, container)


def disarm_cuda(trigger: str) -> str:
    """Remove a `cuda_errors` trigger: the shim passes every call on again within 10 ms.
    Only a trigger is ever removed (a `*.trigger` file in a `cuda` folder): a ledger is data."""
    path = Path(trigger)
    if path.suffix != ".trigger" or path.parent.name != "cuda":
        raise FaultError(f"disarm_cuda: {trigger!r} is not a cuda_errors trigger: refused")
    if not path.exists():
        return f"CUDA error trigger {trigger}: already removed"
    path.unlink(missing_ok=True)
    return f"CUDA error trigger {trigger}: removed, calls pass again"


def stop_cluster(state_dir: str) -> str:
    from inferchaos.targets.local.cluster import LocalCluster  # a heavier import, only for recover

    orphans = LocalCluster.attach(state_dir).stop()
    return f"cluster {state_dir}: stopped" + (f" ({len(orphans)} orphaned groups ended)" if orphans else "")


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
            raise FaultError(f"undo step {step.op}: {name}={value!r} is not {hints.get(name)}: refused")
    if "conn" in step.args:
        conn = step.args["conn"]
        if set(conn) - {"kubeconfig", "context", "cluster"} or not all(v is None or isinstance(v, str)
                                                                    for v in conn.values()):
            raise FaultError(f"undo step {step.op}: conn holds more than kubeconfig, context, cluster: refused")


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


def step(op: str, **args: Any) -> UndoStep:
    made = UndoStep(op, args)
    validate(made)  # a step the ledger could not replay is a bug here, not at recover time
    return made
