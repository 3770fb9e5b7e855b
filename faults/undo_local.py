"""Undo on this machine: processes, runtime settings, proxies and triggers of the local cluster.

A step read from a ledger is data: each executor acts only on what proves, by itself, that
the suite made it. A process must carry the suite's mark in its environment (set when the
suite started it) and, where a pid is named, still have the recorded start time in the
recorded boot. A path must lie in a state directory only this user could have written,
under the name the suite gives it. A proxy is only the one the state dir records, on
loopback. What fails a proof is left alone, said in one line.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from inferchaos.ground.errors import FaultError
from inferchaos.targets.local.control import DESIRED_KEYS, replace_desired
from inferchaos.targets.local.processes import (boot_id, end_groups, group_alive, group_carries, marked,
                                                 same_process, signal_group, start_time, valid_mark)
from inferchaos.targets.local.state import ClusterState, check_state_dir, read_state
from inferchaos.targets.ownership import check_private


def process_ref(pid: int, mark: str) -> dict[str, Any]:
    """What names a process for good, for a step's arguments: pid, start time, boot, mark."""
    return {"pid": pid, "started": start_time(pid), "mark": mark, "boot": boot_id()}


def group_ref(pgid: int, mark: str) -> dict[str, Any]:
    """The same for a process group (its leader's start time)."""
    return {"pgid": pgid, "started": start_time(pgid), "mark": mark, "boot": boot_id()}


def _mark_or_refuse(mark: str, what: str) -> None:
    if not valid_mark(mark):
        raise FaultError(f"{what}: {mark!r} is not a mark the suite makes: refused")


def end_group(pgid: int, started: int | None, mark: str, boot: str, what: str = "process group") -> str:
    _mark_or_refuse(mark, what)
    if pgid <= 1 or pgid == os.getpgrp():
        raise FaultError(f"{what} {pgid}: not a group the suite started: refused")
    if not group_alive(pgid):
        return f"{what} {pgid}: already gone"
    if boot != boot_id():
        return f"{what} {pgid}: recorded before a reboot, left alone"
    if not group_carries(pgid, mark):
        return f"{what} {pgid}: carries no mark of the suite's, left alone"
    if start_time(pgid) is not None and start_time(pgid) != started:
        return f"{what} {pgid}: pid reused by another process, left alone"
    end_groups([pgid], grace_s=3.0)
    return f"{what} {pgid}: ended"


def end_marked(mark: str, what: str = "process") -> str:
    """End the process groups of whatever was started under `mark` (journalled before the
    start, so a crash between the start and its pid's journal leaves nothing behind)."""
    _mark_or_refuse(mark, what)
    groups = sorted({g for g in map(_pgid_or_none, marked(mark)) if g is not None and g > 1 and g != os.getpgrp()})
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


def signal_process(pid: int, started: int | None, mark: str, boot: str, sig: str, what: str = "process") -> str:
    if sig not in UNDO_SIGNALS:
        raise FaultError(f"{what} {pid}: an undo step may not send {sig!r}")
    _mark_or_refuse(mark, what)
    if not same_process(pid, started, mark, boot):
        return f"{what} {pid}: gone, nothing to do"
    if _pgid_or_none(pid) == pid:
        signal_group(pid, getattr(signal, sig))
    else:
        os.kill(pid, getattr(signal, sig))
    return f"{what} {pid}: sent {sig}"


def suite_state(state_dir: str) -> tuple[Path, ClusterState | None]:
    """A state directory only this user could have written, that the suite made (it holds
    the spec the suite writes), and its state if it has one."""
    path = Path(state_dir)
    if not path.is_absolute():
        raise FaultError(f"state dir {state_dir!r}: not an absolute path: refused")
    check_state_dir(path)
    if not path.is_dir():
        raise FaultError(f"state dir {state_dir}: not there")
    if not (path / "spec.json").is_file():
        raise FaultError(f"state dir {state_dir}: holds no cluster spec, not a state dir of the suite's: refused")
    try:
        return path, read_state(path)
    except (OSError, ValueError, TypeError) as exc:
        raise FaultError(f"state dir {state_dir}: unreadable state: {exc}") from None


def _trigger_path(state_dir: Path, device: int) -> Path:
    return state_dir / "cuda" / f"device{int(device)}.trigger"


def _check_desired(state_dir: Path, values: dict[str, Any]) -> None:
    """Runtime settings to write back: known keys of their types, and for `cuda_faults` only
    the suite's own shim and this state dir's triggers (it goes into replicas' LD_PRELOAD)."""
    from inferchaos.ground import native

    for key, value in values.items():
        kind = DESIRED_KEYS.get(key)
        if kind is None or not isinstance(value, (int, float) if kind is float else kind) or isinstance(value, bool):
            raise FaultError(f"restore_desired: {key}={value!r} is not a runtime setting: refused")
    shim = native.cache_dir() / native.LIBRARIES["cuda_shim"].filename
    for device, fault in values.get("cuda_faults", {}).items():
        if not (isinstance(device, str) and device.isdigit() and isinstance(fault, dict)
                and set(fault) == {"shim", "trigger"} and fault["shim"] == str(shim)
                and fault["trigger"] == str(_trigger_path(state_dir, int(device)))):
            raise FaultError(f"restore_desired: cuda_faults {device!r} names another shim or trigger than the "
                             "suite's own: refused")


def restore_desired(state_dir: str, values: dict[str, Any]) -> str:
    path, _ = suite_state(state_dir)
    _check_desired(path, values)
    replace_desired(path, values)
    return f"cluster {state_dir}: runtime settings restored to {values or 'the spec'}"


def clear_toxics(state_dir: str, route: str) -> str:
    """Clear a route of the dependency proxy this state dir records (on loopback only)."""
    import httpx

    from inferchaos.targets.local.depproxy import ProxyControl

    _, state = suite_state(state_dir)
    url = state.proxy_url if state else None
    if not url:
        return f"cluster {state_dir}: no dependency proxy, nothing to clear"
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname != "127.0.0.1" or parts.path not in ("", "/"):
        raise FaultError(f"cluster {state_dir}: its proxy {url!r} is not at 127.0.0.1, where the suite binds it: "
                         "refused")
    if route not in state.via_proxy:
        raise FaultError(f"cluster {state_dir}: no proxy route {route!r}: refused")
    try:
        ProxyControl(url).clear(route)
    except httpx.ConnectError:
        return f"dependency proxy of {state_dir}: gone (its cluster stopped), nothing to clear"
    except httpx.HTTPError as exc:
        raise FaultError(f"dependency proxy of {state_dir}: {route} not cleared ({type(exc).__name__})") from None
    return f"dependency proxy of {state_dir}: {route} restored to full speed"


def clear_perturbation(state_dir: str, pid: int, started: int | None, mark: str, boot: str,
                       what: str = "replica") -> str:
    """Make a replica of this cluster answer exactly again, at the port its record gives."""
    import httpx

    from inferchaos.targets.local.server import PERTURB_PATH

    _mark_or_refuse(mark, what)
    _, state = suite_state(state_dir)
    if not same_process(pid, started, mark, boot):
        return f"{what}: gone, nothing to clear"
    port = next((r.port for r in (state.replicas if state else []) if r.pid == pid), None)
    if port is None:
        return f"{what}: not a replica of {state_dir}, left alone"
    try:
        httpx.delete(f"http://127.0.0.1:{int(port)}{PERTURB_PATH}", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        raise FaultError(f"{what}: could not stop perturbing its outputs: {type(exc).__name__}") from None
    return f"{what}: answers exact again"


def disarm_cuda(state_dir: str, device: int) -> str:
    """Remove a `cuda_errors` trigger: the shim passes every call on again within 10 ms."""
    path, _ = suite_state(state_dir)
    trigger = _trigger_path(path, device)
    check_private(trigger, "file", "CUDA error trigger")
    if not trigger.exists():
        return f"CUDA error trigger {trigger}: already removed"
    trigger.unlink(missing_ok=True)
    return f"CUDA error trigger {trigger}: removed, calls pass again"


def stop_cluster(state_dir: str) -> str:
    from inferchaos.targets.local.cluster import LocalCluster  # a heavier import, only for recover

    suite_state(state_dir)
    orphans = LocalCluster.attach(state_dir).stop()
    return f"cluster {state_dir}: stopped" + (f" ({len(orphans)} orphaned groups ended)" if orphans else "")

