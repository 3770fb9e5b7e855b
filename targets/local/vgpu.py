"""The virtual GPU: device memory as a ledger shared between processes.

Without an NVIDIA GPU the server, and later the GPU-OOM hog, still compete for one
finite pool of device memory. Each device is a small JSON file guarded by `flock`, so
allocations from any process are seen by all. An allocation belongs to a process id:
when that process dies its memory is freed, as a CUDA context's is at process exit,
which is why dead owners are pruned on every access instead of needing a cleanup step.
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from inferchaos.ground.procs import state

GIB = 1024**3
MIB = 1024**2


class DeviceOutOfMemory(Exception):
    """Raised like CUDA's OOM: the allocation that did not fit, and the device's state."""

    def __init__(self, device: int, requested: int, capacity: int, used: int) -> None:
        self.device, self.requested, self.capacity, self.used = device, requested, capacity, used
        super().__init__(
            f"CUDA out of memory. Tried to allocate {requested / MIB:.2f} MiB "
            f"(GPU {device}; {capacity / GIB:.2f} GiB total capacity; "
            f"{used / GIB:.2f} GiB already allocated; {(capacity - used) / MIB:.2f} MiB free)"
        )


@dataclass(frozen=True)
class DeviceUsage:
    device: int
    capacity: int
    used: int
    allocations: dict[str, int] = field(default_factory=dict)

    @property
    def free(self) -> int:
        return self.capacity - self.used


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0) but its memory is gone; read /proc where we can.
    return state(pid) != "Z"


class VirtualDevice:
    """One virtual GPU, stored at `root/device<N>.json`."""

    def __init__(self, root: Path | str, index: int) -> None:
        self.root = Path(root)
        self.index = index
        self.path = self.root / f"device{index}.json"
        self._lock_path = self.root / f"device{index}.lock"

    @classmethod
    def create(cls, root: Path | str, index: int, capacity: int) -> VirtualDevice:
        if capacity <= 0:
            raise ValueError(f"device capacity must be positive, got {capacity}")
        dev = cls(root, index)
        dev.root.mkdir(parents=True, exist_ok=True)
        with dev._locked():
            dev._write({"capacity": int(capacity), "allocations": {}})
        return dev

    def exists(self) -> bool:
        return self.path.exists()

    def allocate(self, nbytes: int, tag: str, pid: int | None = None) -> None:
        """Take `nbytes` for `tag`, owned by `pid` (default: this process)."""
        if nbytes < 0:
            raise ValueError("cannot allocate a negative size")
        key = f"{pid or os.getpid()}/{tag}"
        with self._locked():
            state = self._read_pruned()
            used = sum(state["allocations"].values())
            if used + nbytes > state["capacity"]:
                raise DeviceOutOfMemory(self.index, nbytes, state["capacity"], used)
            state["allocations"][key] = state["allocations"].get(key, 0) + int(nbytes)
            self._write(state)

    def free(self, tag: str, pid: int | None = None) -> int:
        """Release what `tag` holds; freeing twice is harmless. Returns bytes freed."""
        key = f"{pid or os.getpid()}/{tag}"
        with self._locked():
            state = self._read_pruned()
            freed = state["allocations"].pop(key, 0)
            self._write(state)
        return freed

    def usage(self) -> DeviceUsage:
        with self._locked():
            state = self._read_pruned()
            self._write(state)
        allocs = dict(state["allocations"])
        return DeviceUsage(self.index, state["capacity"], sum(allocs.values()), allocs)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read_pruned(self) -> dict:
        try:
            state = json.loads(self.path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"virtual GPU {self.index} does not exist at {self.path}") from None
        state["allocations"] = {
            k: v for k, v in state["allocations"].items() if _alive(int(k.split("/", 1)[0]))
        }
        return state

    def _write(self, state: dict) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.path)
