"""The GPU-OOM fault's memory hog: a greedy competitor for device memory.

It runs as its own process because device memory belongs to a process (a CUDA context,
or a pid in the virtual-GPU ledger): if the runner dies or kills the hog, the memory
comes back without any undo step. The hog takes memory until only `leave` bytes are
free and then keeps it so, grabbing whatever the server frees and never giving any
back, which is how a co-located job or a leaking allocator starves an inference server.

    python -m inferchaos.faults.gpu_hog --device 0 --leave 512MiB --vgpu-dir /tmp/ic/vgpu
    python -m inferchaos.faults.gpu_hog --device 0 --leave-fraction 0.02 --ramp-s 30 --cuda

Exit codes: 0 after SIGTERM/SIGINT (memory released), 1 a device error, 2 bad input or
no usable backend.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import re
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, NoReturn, Protocol, TextIO

from inferchaos.ground.errors import FaultError, UsageError

MIB = 1024**2
GIB = 1024**3
CHUNK = 256 * MIB
MIN_CHUNK = 1 * MIB
CUDA_ERROR_MEMORY_ALLOCATION = 2
TAG = "gpu-hog"

_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12, "tb": 10**12,
    "ki": 2**10, "kib": 2**10, "mi": 2**20, "mib": 2**20, "gi": 2**30, "gib": 2**30, "ti": 2**40, "tib": 2**40,
}


def parse_bytes(value: str | int) -> int:
    """A size as people write it: 1073741824, 512MiB, 2GiB, 1.5GB, 4Gi (case-insensitive).

    Decimal units (kB, MB, GB, TB; also k, M, G, T as Kubernetes reads them) are powers
    of 1000, binary ones (KiB, MiB, GiB, TiB; Ki, Mi, Gi, Ti) powers of 1024, because
    GPU capacities are quoted in both and confusing them is a 7 % error.
    """
    if isinstance(value, bool):
        raise UsageError(f"size {value!r}: not a number of bytes")
    if isinstance(value, int):
        if value < 0:
            raise UsageError(f"size {value}: must not be negative")
        return value
    text = str(value).strip()
    m = re.fullmatch(r"(-?)(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)", text)
    if not m or m.group(3).lower() not in _UNITS:
        raise UsageError(f"size {text!r}: give bytes, e.g. 1073741824, 512MiB, 2GiB or 1.5GB")
    if m.group(1):
        raise UsageError(f"size {text!r}: must not be negative")
    number, unit = m.group(2), _UNITS[m.group(3).lower()]
    return int(number) * unit if number.isdigit() else int(float(number) * unit)


def format_bytes(n: int) -> str:
    return f"{n / GIB:.2f} GiB"


def leave_bytes(total: int, leave: int | None, leave_fraction: float | None) -> int:
    """The free memory to leave at the end: given in bytes, or as a share of capacity."""
    if leave is not None:
        return leave
    assert leave_fraction is not None
    return int(total * leave_fraction)


def target_free(start_free: int, leave: int, ramp_s: float, elapsed_s: float) -> int:
    """Free memory to aim for `elapsed_s` after the start.

    With a ramp the target falls linearly from what was free at the start to `leave`,
    so the server sees pressure grow (as fragmentation makes it) instead of a cliff.
    """
    if ramp_s <= 0 or elapsed_s >= ramp_s or start_free <= leave:
        return leave
    done = max(elapsed_s, 0.0) / ramp_s
    return int(start_free - (start_free - leave) * done)


def take_in_chunks(want: int, alloc: Callable[[int], bool], chunk: int = CHUNK, min_chunk: int = MIN_CHUNK) -> int:
    """Allocate up to `want` bytes in chunks of at most `chunk`; returns what was taken.

    A chunk that fails is retried at half the size, down to `min_chunk`, so the hog gets
    within `min_chunk` of its target even when free memory is fragmented.
    """
    taken = 0
    while taken < want and chunk >= min_chunk:
        n = min(chunk, want - taken)
        if alloc(n):
            taken += n
        else:
            chunk = n // 2
    return taken


class Backend(Protocol):
    """Device memory as the hog sees it. `take` never raises for lack of memory."""

    name: str

    def mem_info(self) -> tuple[int, int]:
        """(free, total) bytes on the device."""
        ...

    def take(self, nbytes: int) -> int:
        """Take up to `nbytes`; returns how many were taken."""
        ...

    def release_all(self) -> None: ...


class VgpuBackend:
    """The local cluster's virtual GPU: one ledger entry, owned by this process's pid."""

    name = "vgpu"

    def __init__(self, root: Path | str, device: int) -> None:
        from inferchaos.targets.local.vgpu import VirtualDevice

        self.dev = VirtualDevice(root, device)
        if not self.dev.exists():
            raise UsageError(f"virtual GPU {device} does not exist at {self.dev.path}")

    def mem_info(self) -> tuple[int, int]:
        usage = self.dev.usage()
        return usage.free, usage.capacity

    def take(self, nbytes: int) -> int:
        from inferchaos.targets.local.vgpu import DeviceOutOfMemory

        # The server may allocate between our read and this take: then take what fits.
        for _ in range(8):
            if nbytes <= 0:
                return 0
            try:
                self.dev.allocate(nbytes, TAG)
                return nbytes
            except DeviceOutOfMemory as exc:
                nbytes = min(nbytes, exc.capacity - exc.used)
        return 0

    def release_all(self) -> None:
        self.dev.free(TAG)


class TorchBackend:
    name = "torch"

    def __init__(self, device: int) -> None:
        import torch  # noqa: PLC0415 - optional dependency

        if not torch.cuda.is_available():
            raise RuntimeError("no CUDA device visible")
        if not 0 <= device < torch.cuda.device_count():
            raise RuntimeError(f"device {device} not present ({torch.cuda.device_count()} devices)")
        self.torch, self.device, self.blocks = torch, f"cuda:{device}", []

    def mem_info(self) -> tuple[int, int]:
        free, total = self.torch.cuda.mem_get_info(self.device)
        return int(free), int(total)

    def _alloc(self, n: int) -> bool:
        try:
            self.blocks.append(self.torch.empty(n, dtype=self.torch.uint8, device=self.device))
            return True
        except self.torch.cuda.OutOfMemoryError:
            return False

    def take(self, nbytes: int) -> int:
        return take_in_chunks(nbytes, self._alloc)

    def release_all(self) -> None:
        self.blocks.clear()
        self.torch.cuda.empty_cache()  # else the caching allocator keeps it


class CupyBackend:
    name = "cupy"

    def __init__(self, device: int) -> None:
        import cupy  # noqa: PLC0415 - optional dependency

        if not 0 <= device < cupy.cuda.runtime.getDeviceCount():
            raise RuntimeError(f"device {device} not present")
        cupy.cuda.Device(device).use()
        self.cupy, self.blocks = cupy, []

    def mem_info(self) -> tuple[int, int]:
        free, total = self.cupy.cuda.runtime.memGetInfo()
        return int(free), int(total)

    def _alloc(self, n: int) -> bool:
        try:
            self.blocks.append(self.cupy.cuda.alloc(n))
            return True
        except self.cupy.cuda.memory.OutOfMemoryError:
            return False

    def take(self, nbytes: int) -> int:
        return take_in_chunks(nbytes, self._alloc)

    def release_all(self) -> None:
        self.blocks.clear()
        self.cupy.get_default_memory_pool().free_all_blocks()


def cudart_candidates() -> list[str]:
    """Where libcudart may be: the usual sonames, then one from nvidia-cuda-runtime wheels."""
    names = ["libcudart.so"] + [f"libcudart.so.{v}" for v in ("13", "12", "11.0", "11", "10.2", "10.1")]
    found = ctypes.util.find_library("cudart")
    if found and found not in names:
        names.append(found)
    try:
        import nvidia.cuda_runtime as wheel  # noqa: PLC0415 - optional dependency

        for base in wheel.__path__:
            names += sorted(str(p) for p in Path(base, "lib").glob("libcudart.so*"))
    except ImportError:
        pass
    return names


def load_cudart() -> Any:
    """The first libcudart that loads, with the signatures the hog uses declared."""
    for name in cudart_candidates():
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        sz = ctypes.POINTER(ctypes.c_size_t)
        lib.cudaSetDevice.argtypes = [ctypes.c_int]
        lib.cudaMemGetInfo.argtypes = [sz, sz]
        lib.cudaMalloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]
        lib.cudaFree.argtypes = [ctypes.c_void_p]
        lib.cudaGetErrorString.argtypes = [ctypes.c_int]
        lib.cudaGetErrorString.restype = ctypes.c_char_p
        return lib
    raise RuntimeError("not found: tried " + ", ".join(cudart_candidates()))


class CudartBackend:
    """The CUDA runtime through ctypes, for hosts with a driver but no torch or cupy.

    `lib` is anything with the runtime's functions and calling conventions (out-params
    by `ctypes.byref`), so tests can hand in a fake at this, the lowest, boundary.
    """

    name = "cudart"

    def __init__(self, device: int, lib: Any = None) -> None:
        self.lib = lib if lib is not None else load_cudart()
        self.device = device
        self.ptrs: list[ctypes.c_void_p] = []
        self._check(self.lib.cudaSetDevice(device), f"cudaSetDevice({device})")

    def _check(self, code: int, call: str) -> None:
        if code != 0:
            text = self.lib.cudaGetErrorString(code)
            text = text.decode() if isinstance(text, bytes) else str(text)
            raise FaultError(f"{call} failed: error {code}: {text}")

    def mem_info(self) -> tuple[int, int]:
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        self._check(self.lib.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)), "cudaMemGetInfo")
        return free.value, total.value

    def _alloc(self, n: int) -> bool:
        ptr = ctypes.c_void_p()
        code = self.lib.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(n))
        if code == CUDA_ERROR_MEMORY_ALLOCATION:
            return False
        self._check(code, f"cudaMalloc({n})")
        self.ptrs.append(ptr)
        return True

    def take(self, nbytes: int) -> int:
        return take_in_chunks(nbytes, self._alloc)

    def release_all(self) -> None:
        while self.ptrs:
            self._check(self.lib.cudaFree(self.ptrs.pop()), "cudaFree")


def open_cuda(device: int) -> Backend:
    """The first CUDA backend that works: torch, cupy, then libcudart via ctypes."""
    tried = []
    for name, make in (("torch", TorchBackend), ("cupy", CupyBackend), ("libcudart", CudartBackend)):
        try:
            return make(device)
        except ImportError:
            tried.append(f"{name} (not installed)")
        except Exception as exc:  # noqa: BLE001 - any failure means "try the next one"
            tried.append(f"{name} ({exc})")
    raise UsageError(f"no CUDA backend for device {device}: tried " + "; ".join(tried))


@dataclass(frozen=True)
class HogPlan:
    """What to hog, as checked from the command line (or built by the fault directly)."""

    device: int
    leave: int | None = None
    leave_fraction: float | None = None
    ramp_s: float = 0.0
    tick_s: float = 0.1
    status_path: Path | None = None
    vgpu_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.device < 0:
            raise UsageError(f"--device must be 0 or more, got {self.device}")
        if (self.leave is None) == (self.leave_fraction is None):
            raise UsageError("give exactly one of --leave and --leave-fraction")
        if self.leave is not None and self.leave < 0:
            raise UsageError(f"--leave must not be negative, got {self.leave}")
        if self.leave_fraction is not None and not 0 <= self.leave_fraction <= 1:
            raise UsageError(f"--leave-fraction must be within [0, 1], got {self.leave_fraction}")
        if self.ramp_s < 0:
            raise UsageError(f"--ramp-s must be 0 or more, got {self.ramp_s}")
        if self.tick_s <= 0:
            raise UsageError(f"--tick-s must be more than 0, got {self.tick_s}")

    def open_backend(self) -> Backend:
        return VgpuBackend(self.vgpu_dir, self.device) if self.vgpu_dir else open_cuda(self.device)


@dataclass(frozen=True)
class Status:
    """What the hog holds now; the fault reads it to check the hog took effect."""

    pid: int
    backend: str
    device: int
    held: int
    free: int
    total: int
    target_free: int
    at: float

    def write(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.{self.pid}.tmp")
        tmp.write_text(json.dumps(asdict(self)))
        os.replace(tmp, path)


class Hog:
    """The greedy loop: every tick, take whatever is free above the target."""

    def __init__(self, backend: Backend, plan: HogPlan, out: TextIO = sys.stdout) -> None:
        self.backend, self.plan, self.out = backend, plan, out
        self.held, self.target, self.stopping = 0, 0, False
        self._said_held, self._said_at = 0, float("-inf")
        self._wrote: tuple[int, ...] | None = None
        self._wrote_at = 0.0

    def stop(self, *_: object) -> None:
        """Ask the loop to end; safe from a signal handler or another thread."""
        self.stopping = True

    def run(self) -> None:
        """Hog until `stop()`, then give everything back."""
        try:
            free, total = self.backend.mem_info()
            leave = leave_bytes(total, self.plan.leave, self.plan.leave_fraction)
            start_free, t0 = free, time.monotonic()
            self._say(f"device {self.plan.device} ({self.backend.name}): total {format_bytes(total)}, "
                      f"free {format_bytes(free)}, target free {format_bytes(leave)}")
            while not self.stopping:
                self.target = target_free(start_free, leave, self.plan.ramp_s, time.monotonic() - t0)
                free, total = self.backend.mem_info()
                if free > self.target:
                    self.held += self.backend.take(free - self.target)
                    free, total = self.backend.mem_info()
                self._report(free, total)
                time.sleep(self.plan.tick_s)
        finally:
            self._release()

    def _release(self) -> None:
        self.backend.release_all()
        released, self.held = self.held, 0
        try:
            free, total = self.backend.mem_info()
        except FaultError:
            self._say(f"released {format_bytes(released)}")
            return
        self._write_status(free, total, force=True)
        self._say(f"released {format_bytes(released)}, free {format_bytes(free)}")

    def _report(self, free: int, total: int) -> None:
        now = time.monotonic()
        if abs(self.held - self._said_held) >= total / 100 and now - self._said_at >= 1.0:
            self._say(f"holding {format_bytes(self.held)}, free {format_bytes(free)}")
            self._said_held, self._said_at = self.held, now
        self._write_status(free, total)

    def _write_status(self, free: int, total: int, force: bool = False) -> None:
        if self.plan.status_path is None:
            return
        figures, now = (self.held, free, total, self.target), time.monotonic()
        if force or figures != self._wrote or now - self._wrote_at >= 1.0:
            Status(os.getpid(), self.backend.name, self.plan.device, self.held, free, total, self.target,
                   time.time()).write(self.plan.status_path)
            self._wrote, self._wrote_at = figures, now

    def _say(self, line: str) -> None:
        print(f"gpu_hog: {line}", file=self.out, flush=True)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m inferchaos.faults.gpu_hog", description="Take device memory until only --leave is free.")
    p.add_argument("--device", type=int, required=True, help="device index")
    leave = p.add_mutually_exclusive_group(required=True)
    leave.add_argument("--leave", help="bytes to leave free: 536870912, 512MiB, 2GiB, 1.5GB")
    leave.add_argument("--leave-fraction", type=float, help="share of capacity to leave free, 0..1")
    p.add_argument("--ramp-s", type=float, default=0.0, help="reach the target gradually over S seconds")
    p.add_argument("--tick-s", type=float, default=0.1, help="how often to re-read free memory")
    p.add_argument("--status", type=Path, help="write current figures to this JSON file")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--vgpu-dir", type=Path, help="the local cluster's virtual GPU directory")
    where.add_argument("--cuda", action="store_true", help="real device memory (torch, cupy or libcudart)")
    return p


def parse_plan(argv: list[str] | None = None) -> HogPlan:
    """The command line as a checked plan; raises UsageError for any bad input."""
    args = build_parser().parse_args(argv)
    leave = parse_bytes(args.leave) if args.leave is not None else None
    return HogPlan(args.device, leave, args.leave_fraction, args.ramp_s, args.tick_s, args.status,
                   None if args.cuda else args.vgpu_dir)


def main(argv: list[str] | None = None) -> int:
    stopping = False

    def early_stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    # Handlers first: a SIGTERM while the backend opens must still end in a clean exit 0.
    signal.signal(signal.SIGTERM, early_stop)
    signal.signal(signal.SIGINT, early_stop)
    try:
        plan = parse_plan(argv)
        hog = Hog(plan.open_backend(), plan)
    except UsageError as exc:
        print(f"gpu_hog: error: {exc}", file=sys.stderr, flush=True)
        return 2
    signal.signal(signal.SIGTERM, hog.stop)
    signal.signal(signal.SIGINT, hog.stop)
    hog.stopping = stopping
    try:
        hog.run()
    except FaultError as exc:
        print(f"gpu_hog: error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
