"""GPU out-of-memory: a hog takes device memory on a replica's GPU until only `leave`
is free, so the server's next allocation fails the way CUDA's does.

What good looks like: the OOMing replica fails the requests of its failed batch and
exits (vLLM's behaviour) or rejects and stays up (as configured), the LB stops routing
to it, and the replacement serves once memory is back. The hog is a process of its own
(`python -m inferchaos.faults.gpu_hog`): device memory belongs to a process, so ending the hog —
on revert, or by `inferchaos recover` after a crash — gives every byte back.

`ramp_s` > 0 is the gradual variant: memory pressure grows over that many seconds, as
fragmentation or a leak does, and the largest batches fail first.
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inferchaos.faults.base import Landing
from inferchaos.faults.gpu_hog import parse_bytes
from inferchaos.faults.local.base import LocalFault
from inferchaos.faults.registry import executes
from inferchaos.faults.undo import group_ref, step
from inferchaos.ground.errors import FaultError, UsageError
from inferchaos.targets.local.processes import MARK_ENV, new_mark, service_env, spawn
from inferchaos.targets.local.vgpu import VirtualDevice


@executes("gpu_oom", "local")
@dataclass
class GpuOom(LocalFault):
    """`leave`: bytes ("0", "256MiB", "1.5GB") or a share of capacity ("2%")."""

    hog_status: dict[int, dict] = field(default_factory=dict, init=False)
    _hogs: list[Any] = field(default_factory=list, init=False, repr=False)

    def _leave_args(self) -> list[str]:
        text = str(self.args.leave).strip()
        m = re.fullmatch(r"(\d+(?:\.\d+)?)%", text)
        if m:
            share = float(m.group(1)) / 100
            if not 0 <= share <= 1:
                raise UsageError(f"{self.name}: leave {text}: a share must be within 0%..100%")
            return ["--leave-fraction", str(share)]
        return ["--leave", str(parse_bytes(text))]

    def _plan(self) -> list[str]:
        how = f"over {self.args.ramp_s:g}s" if self.args.ramp_s else "at once"
        return [f"start a memory hog on GPU {v.device} (used by {v.name}) leaving {self.args.leave} free, {how}; "
                "end it on revert" for v in self.choose()]

    def _status_path(self, device: int) -> Path:
        return Path(self.cluster.state_dir) / "logs" / f"gpu-hog-{device}.json"

    def _inject(self) -> None:
        self.victims = self._victims_or_fail()
        vgpu_dir = self.cluster.state.vgpu_dir
        if not vgpu_dir:
            raise UsageError(f"{self.name}: the cluster has no virtual GPU directory")
        for v in self.victims:
            status = self._status_path(v.device)
            status.unlink(missing_ok=True)
            argv = [sys.executable, "-m", "inferchaos.faults.gpu_hog", "--device", str(v.device), *self._leave_args(),
                    "--ramp-s", str(self.args.ramp_s), "--vgpu-dir", vgpu_dir, "--status", str(status)]
            mark = new_mark("gpu-hog")
            self.journal([step("end_marked", mark=mark, what=f"gpu hog on device {v.device}")])
            proc = spawn(argv, status.with_suffix(".log"), service_env(**{MARK_ENV: mark}))
            self._hogs.append(proc)
            self.journal([step("end_group", **group_ref(proc.pid, mark), what=f"gpu hog on device {v.device}")])
            self.note("hog", v.name)
            self._wait_holding(proc, v.device, status)
        self.watch_deaths(self.victims)

    def _wait_holding(self, proc: Any, device: int, status: Path, timeout_s: float = 10.0) -> None:
        """Return once the hog reports it holds memory (the effect, measured)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                log = status.with_suffix(".log")
                raise FaultError(f"the GPU hog exited with code {proc.returncode}: "
                                 f"{log.read_text().strip().splitlines()[-1:] if log.exists() else ''}")
            try:
                self.hog_status[device] = json.loads(status.read_text())
                return
            except (FileNotFoundError, json.JSONDecodeError):
                time.sleep(0.05)
        raise FaultError(f"the GPU hog on device {device} reported nothing within {timeout_s:g}s")

    def landed(self) -> Landing:
        """Memory actually taken: the hog's allocation on each victim's device, read from
        the device's own ledger, above zero (a hog that allocated nothing is no OOM)."""
        if not self.victims:
            return Landing(False, "no replica was chosen")
        seen = []
        for v in self.victims:
            u = VirtualDevice(self.cluster.state.vgpu_dir or "", v.device).usage()
            taken = sum(n for k, n in u.allocations.items() if "gpu-hog" in k)
            if taken <= 0:
                return Landing(False, f"the hog holds nothing on GPU {v.device} ({u.free} bytes free)")
            seen.append(f"GPU {v.device}: hog holds {taken / 2**20:.0f} MiB, {u.free / 2**20:.0f} MiB free")
        return Landing(True, "; ".join(seen))

    def usage(self, device: int) -> dict[str, int]:

        vgpu_dir = self.cluster.state.vgpu_dir
        u = VirtualDevice(vgpu_dir or "", device).usage()
        return {"capacity": u.capacity, "used": u.used, "free": u.free}

    def _revert(self) -> None:
        for v in self.victims:
            try:
                self.hog_status[v.device] = json.loads(self._status_path(v.device).read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                pass
        super()._revert()  # ends the hogs: their memory is freed with their process
        for proc in self._hogs:
            proc.wait(5)  # reap our child, or it lingers as a zombie

    def figures(self) -> dict[str, Any]:
        return {"hog": {str(d): s for d, s in self.hog_status.items()}}
