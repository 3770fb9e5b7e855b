"""CUDA errors in the serving process: its allocations fail with out-of-memory, or its
kernel launches return an illegal-address or an uncorrectable-ECC error.

The GPU-OOM hog shows what the node sees (memory gone, NVML's figures); this shows what
the application does with the error, which is the other half: vLLM's engine dies on it,
a server that catches it answers 500s while its health check stays green, and only an
illegal address or an ECC error is certain to need a new process (the CUDA context is
lost: every later call fails the same way). Both halves are needed, because an XID alone
gets a node cordoned while the app keeps running, and a CUDA error alone fails the app
while the node monitor never notices.

How: an LD_PRELOAD shim (faults/cuda_shim.c) between the server and libcudart/libcuda.
A process cannot be given a preload while it runs, so before the baseline each victim is
restarted with the shim in its environment (as a Deployment's pods are rolled when their
env changes) and the shim, inert, is measured with the baseline. Injecting writes the
trigger file the shim reads; reverting removes it, and allocations succeed again in the
same process. A lost context stays lost: that process must end, as on a real device.
The fault follows the GPU: a replica started on a faulty device while the fault holds (a
replacement) gets the shim too, as a pod scheduled onto a broken GPU would.
"""

from __future__ import annotations

import os
import signal
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from inferchaos.ground import native
from inferchaos.ground.errors import FaultError
from inferchaos.faults.base import Landing
from inferchaos.faults.local.base import LocalFault
from inferchaos.faults.registry import executes
from inferchaos.faults.undo import step
from inferchaos.targets.local.cluster import wait_for
from inferchaos.targets.local.model import INPUT_DIM
from inferchaos.targets.local.control import read_desired, set_desired
from inferchaos.targets.local.processes import signal_group
from inferchaos.targets.local.state import ReplicaRecord

#: error -> (the trigger's words for it, what the server's calls return, which calls)
ERRORS: dict[str, tuple[str, str, str]] = {
    "oom": ("alloc=oom", "out of memory (2)", "allocations"),
    "illegal_address": ("launch=700", "an illegal memory access (700)", "kernel launches"),
    "ecc": ("launch=214", "an uncorrectable ECC error (214)", "kernel launches"),
}
RESTART_TIMEOUT_S = 90.0


def read_status(path: Path) -> dict[str, str]:
    """One shim status file (`key=value ...`); empty if it is being replaced or gone."""
    try:
        return dict(kv.split("=", 1) for kv in path.read_text().split() if "=" in kv)
    except OSError:
        return {}


def write_trigger(trigger: Path, text: str) -> None:
    """Atomically: a new inode, which the shim re-reads on its next call, never a half-written file."""
    tmp = trigger.with_name(trigger.name + ".new")
    tmp.write_text(text)
    os.replace(tmp, trigger)


def statuses(trigger: Path) -> dict[int, dict[str, str]]:
    """Every status the shim wrote for `trigger`, by pid (one per process that loaded it)."""
    out = {}
    for p in trigger.parent.glob(trigger.name + ".status.*"):
        if p.suffix != ".tmp" and (s := read_status(p)).get("pid", "").isdigit():
            out[int(s["pid"])] = s
    return out


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


@executes("cuda_errors", "local")
@dataclass
class CudaErrors(LocalFault):
    """`error`: oom (allocations fail), illegal_address or ecc (launches fail; the context is
    lost); `after`: calls that still pass first; `rate`: the share of allocations that fail."""

    land_within_s = 10.0
    #: what the one request `landed()` sent to a victim got back, if it sent one
    answer: str = field(default="", init=False)
    trigger_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12], init=False)
    _triggers: dict[int, Path] = field(default_factory=dict, init=False, repr=False)

    def validate(self) -> None:
        native.compiler()  # the shim is compiled where it runs: no compiler is bad input, said before anything

    def _words(self) -> str:
        _, returns, calls = ERRORS[self.args.error]
        odds = f"{self.args.rate:.0%} of " if self.args.rate < 1 else ""
        return f"{odds}its {calls} return {returns}" + (f" after {self.args.after} succeed" if self.args.after else "")

    def _plan(self) -> list[str]:
        return [f"restart {v.name} (GPU {v.device}) with the CUDA error shim preloaded, inert, before the baseline; "
                f"then {self._words()}; calls pass again on revert" for v in self.choose()]

    def _trigger(self, device: int) -> Path:
        return Path(self.cluster.state_dir) / "cuda" / f"device{device}.trigger"

    # ------------------------------------------------------------------- prepare: roll
    def _prepare(self) -> None:
        shim = native.path("cuda_shim")
        if not self.cluster.spec.replica_cmd:
            native.path("cudart")  # the reference server's runtime: same compiler, same error if none
        chosen = self._victims_or_fail()
        self._triggers = {v.device: self._trigger(v.device) for v in chosen}
        next(iter(self._triggers.values())).parent.mkdir(parents=True, exist_ok=True)
        self.journal([step("disarm_cuda", state_dir=str(self.cluster.state_dir), device=d) for d in self._triggers])
        faults = dict(read_desired(self.cluster.state_dir).get("cuda_faults", {}))
        faults.update({str(d): {"shim": str(shim), "trigger": str(t)} for d, t in self._triggers.items()})
        previous = read_desired(self.cluster.state_dir).get("provisioning_delay_s")
        # a restart in place, not a lost node: no provisioning delay for it
        self.change_settings(cuda_faults=faults, provisioning_delay_s=0.0)
        for v in chosen:
            signal_group(v.pgid, signal.SIGTERM)
            self.note("restart", v.name)
        self.victims = [self._restarted(v) for v in chosen]
        set_desired(self.cluster.state_dir, provisioning_delay_s=previous)
        self.cluster.wait_steady(RESTART_TIMEOUT_S)  # back in the LB's rotation before the baseline

    def _restarted(self, old: ReplicaRecord) -> ReplicaRecord:
        """The victim's successor in its slot, ready, on the same GPU, with the shim loaded
        (it reported in: its status file names a process of its group)."""
        trigger = self._trigger(old.device)

        def successor() -> ReplicaRecord | None:
            for r in self.cluster.state.replicas:
                if r.name != old.name and r.slot == old.slot and r.phase == "ready":
                    if r.device != old.device:
                        raise FaultError(f"{self.name}: {old.name}'s successor {r.name} started on GPU {r.device}, "
                                         f"not GPU {old.device}")
                    if any(_group_of(pid) == r.pgid for pid in statuses(trigger)):
                        return r
                    raise FaultError(f"{self.name}: {r.name} started without the shim loaded (its command may clear "
                                     "LD_PRELOAD, or be statically linked)")
            return None

        new = wait_for(successor, RESTART_TIMEOUT_S, f"{old.name} restarted with the CUDA error shim")
        self.note("shim loaded", new.name)
        return new

    # ------------------------------------------------------------------- inject: arm
    def _inject(self) -> None:
        if not self.victims:
            raise FaultError(f"{self.name}: inject() before prepare()")
        words = ERRORS[self.args.error][0]
        count = "after" if self.args.error == "oom" else "launch_after"
        text = f"id={self.trigger_id} {words} {count}={self.args.after} rate={self.args.rate:g} seed=1\n"
        for trigger in self._triggers.values():
            write_trigger(trigger, text)
        for v in self.victims:
            self.note("armed", v.name)
        self.watch_deaths(self.victims)

    def _provoke(self) -> None:
        """One request to each victim that has not been hit yet, so the fault shows without
        load too (a game day's `inject`): the reference server's only; another server's
        request shape is the workload's business, and its load provokes it."""
        if self.cluster.spec.replica_cmd:
            return
        body = {"inputs": [{"name": "input", "shape": [1, INPUT_DIM], "datatype": "FP32", "data": [0.5] * INPUT_DIM}]}
        for v in self.victims:
            try:
                resp = httpx.post(f"http://127.0.0.1:{v.port}/v2/models/{self.cluster.spec.model}/infer",
                                  json=body, timeout=2)
                self.answer = f"HTTP {resp.status_code}: {resp.text[:200]}"
            except httpx.HTTPError as exc:
                self.answer = type(exc).__name__

    def landed(self) -> Landing:
        """An error returned: the shim in a victim's process read this trigger (its id) and
        failed at least one call. Armed but never hit is no fault the server felt."""
        if not self.victims:
            return Landing(False, "no replica was chosen")
        landing = self._read_landing()
        if not landing.ok:
            self._provoke()
            landing = self._read_landing()
        return landing

    def _read_landing(self) -> Landing:
        seen = []
        for device, trigger in self._triggers.items():
            hits = [s for s in statuses(trigger).values() if s.get("id") == self.trigger_id]
            failed = sum(int(s.get("alloc_failed", 0)) + int(s.get("launch_failed", 0)) for s in hits)
            if not hits:
                return Landing(False, f"no process on GPU {device} has read the trigger")
            if failed == 0:
                return Landing(False, f"the shim on GPU {device} is armed but returned no CUDA error "
                                      f"({sum(int(s.get('allocs', 0)) for s in hits)} allocations, "
                                      f"{sum(int(s.get('launches', 0)) for s in hits)} launches passed)")
            seen.append(f"GPU {device}: {failed} call(s) returned {ERRORS[self.args.error][1]} in pid "
                        + ", ".join(s["pid"] for s in hits if int(s.get("alloc_failed", 0)) + int(s.get("launch_failed", 0))))
        said = f"; a request sent to the victim got {self.answer}" if self.answer else ""
        return Landing(True, "; ".join(seen) + said)

    def figures(self) -> dict[str, Any]:
        """Per process that loaded the shim: what it passed on and what it failed."""
        return {"cuda": {str(d): {str(pid): {k: s[k] for k in ("id", "allocs", "alloc_failed", "launches",
                                                            "launch_failed", "sticky") if k in s}
                                  for pid, s in statuses(t).items()}
                         for d, t in self._triggers.items()}}
