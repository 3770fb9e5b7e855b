"""The GPU-OOM hog: real hog processes on the real virtual-GPU ledger; CUDA faked only at libcudart."""

from __future__ import annotations

import ctypes
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from inferchaos.faults.gpu_hog import (
    CHUNK, CUDA_ERROR_MEMORY_ALLOCATION, MIN_CHUNK, CudartBackend, Hog, HogPlan, VgpuBackend,
    leave_bytes, parse_bytes, take_in_chunks, target_free,
)
from inferchaos.ground.errors import FaultError, UsageError
from inferchaos.targets.local.vgpu import GIB, MIB, VirtualDevice
from tests.support.leftovers import processes_mentioning
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


def held_by(dev: VirtualDevice, pid: int) -> int:
    return dev.usage().allocations.get(f"{pid}/gpu-hog", 0)


class Procs:
    """Owns every process a test starts; the fixture ends them and checks none is left."""

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.started = tmp, []

    def hog(self, *args: str) -> tuple[subprocess.Popen, Path]:
        out = self.tmp / f"hog{len(self.started)}.out"
        with open(out, "w") as f:
            proc = subprocess.Popen([sys.executable, "-m", "inferchaos.faults.gpu_hog", *args], cwd=ROOT,
                                    stdout=f, stderr=subprocess.STDOUT)
        self.started.append(proc)
        return proc, out

    def holder(self, nbytes: int, tag: str = "server") -> subprocess.Popen:
        """Another process holding device memory, as an inference replica would."""
        code = ("import sys, time; from inferchaos.targets.local.vgpu import VirtualDevice;"
                f"VirtualDevice({str(self.tmp)!r}, 0).allocate({nbytes}, {tag!r}); print('held', flush=True);"
                "time.sleep(60)")
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        self.started.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    owner = Procs(tmp_path)
    yield owner
    for proc in owner.started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()
    assert not processes_mentioning(str(tmp_path))


@pytest.fixture
def dev(tmp_path: Path) -> VirtualDevice:
    return VirtualDevice.create(tmp_path, 0, 1 * GIB)


def lines(out: Path) -> list[str]:
    return out.read_text().splitlines()


def started(out: Path) -> None:
    wait_for(lambda: any(" total " in line for line in lines(out)), what="the hog's start line")


# ------------------------------------------------------------------ against the virtual GPU
def test_leaves_exactly_leave_free_beside_a_server_and_grabs_what_it_frees(procs, dev, tmp_path):
    dev.allocate(200 * MIB, "test")
    server = procs.holder(300 * MIB)
    status = tmp_path / "hog.json"
    hog, out = procs.hog("--device", "0", "--leave", "100MiB", "--vgpu-dir", str(tmp_path), "--status", str(status))

    wait_for(lambda: held_by(dev, hog.pid) == 1 * GIB - 600 * MIB, what="the hog to take all but 100 MiB")
    assert dev.usage().free == 100 * MIB
    assert lines(out)[0] == "gpu_hog: device 0 (vgpu): total 1.00 GiB, free 0.51 GiB, target free 0.10 GiB"
    wait_for(lambda: status.exists() and json.loads(status.read_text())["held"] == 424 * MIB, what="the status file")
    assert json.loads(status.read_text()) | {"at": 0} == {
        "pid": hog.pid, "backend": "vgpu", "device": 0, "held": 424 * MIB, "free": 100 * MIB,
        "total": 1 * GIB, "target_free": 100 * MIB, "at": 0}

    server.kill()  # its 300 MiB come free; a greedy competitor takes them
    server.wait()
    wait_for(lambda: held_by(dev, hog.pid) == 724 * MIB, what="the hog to grab what the server freed")
    assert dev.usage().free == 100 * MIB
    wait_for(lambda: any(re.fullmatch(r"gpu_hog: holding 0\.71 GiB, free 0\.10 GiB", x) for x in lines(out)),
             what="a holding line for the new figure")

    hog.send_signal(signal.SIGTERM)
    assert hog.wait(timeout=5) == 0
    assert dev.usage().allocations == {f"{os.getpid()}/test": 200 * MIB}
    assert lines(out)[-1] == "gpu_hog: released 0.71 GiB, free 0.80 GiB"
    assert json.loads(status.read_text())["held"] == 0


def test_sigkill_memory_comes_back_through_the_ledger(procs, dev, tmp_path):
    procs.holder(256 * MIB)
    before = dev.usage().allocations
    hog, _ = procs.hog("--device", "0", "--leave", "0", "--vgpu-dir", str(tmp_path))
    wait_for(lambda: dev.usage().free == 0, what="the hog to take everything")
    hog.kill()
    hog.wait(timeout=5)
    assert dev.usage().allocations == before


def test_leave_fraction_of_capacity_and_sigint(procs, dev, tmp_path):
    hog, out = procs.hog("--device", "0", "--leave-fraction", "0.25", "--vgpu-dir", str(tmp_path))
    wait_for(lambda: held_by(dev, hog.pid) == 768 * MIB, what="the hog to leave a quarter free")
    assert dev.usage().free == 256 * MIB
    hog.send_signal(signal.SIGINT)
    assert hog.wait(timeout=5) == 0
    assert dev.usage().used == 0
    assert lines(out)[-1].startswith("gpu_hog: released 0.75 GiB")


def test_ramp_takes_memory_gradually_then_holds_the_target(procs, dev, tmp_path):
    hog, out = procs.hog("--device", "0", "--leave", "64MiB", "--ramp-s", "2", "--tick-s", "0.05",
                         "--vgpu-dir", str(tmp_path))
    started(out)
    t0 = time.monotonic()
    time.sleep(max(0.0, t0 + 0.5 - time.monotonic()))
    early = held_by(dev, hog.pid)
    time.sleep(max(0.0, t0 + 1.2 - time.monotonic()))
    later = held_by(dev, hog.pid)
    assert 0 < early < later < 960 * MIB
    wait_for(lambda: held_by(dev, hog.pid) == 960 * MIB, what="the ramp to end at the target")
    assert dev.usage().free == 64 * MIB


BAD = [
    ([], "required"),
    (["--device", "0", "{dir}"], "--leave"),
    (["--device", "0", "--leave", "1GiB", "--leave-fraction", "0.5", "{dir}"], "not allowed"),
    (["--device", "0", "--leave-fraction", "1.5", "{dir}"], "[0, 1]"),
    (["--device", "0", "--leave-fraction", "-0.1", "{dir}"], "[0, 1]"),
    (["--device", "0", "--leave", "-5", "{dir}"], "negative"),
    (["--device", "0", "--leave", "12XB", "{dir}"], "'12XB'"),
    (["--device", "3", "--leave", "1GiB", "{dir}"], "does not exist"),
    (["--device", "-1", "--leave", "1GiB", "{dir}"], "--device"),
    (["--device", "0", "--leave", "1GiB"], "required"),
    (["--device", "0", "--leave", "1GiB", "--cuda", "{dir}"], "not allowed"),
    (["--device", "0", "--leave", "1GiB", "--tick-s", "0", "{dir}"], "--tick-s"),
    (["--device", "0", "--leave", "1GiB", "--ramp-s", "-1", "{dir}"], "--ramp-s"),
]


@pytest.mark.parametrize(("args", "says"), BAD, ids=[" ".join(a) or "nothing" for a, _ in BAD])
def test_bad_input_exits_2_with_one_line_and_takes_nothing(dev, tmp_path, args, says):
    argv = [x for a in args for x in (["--vgpu-dir", str(tmp_path)] if a == "{dir}" else [a])]
    argv += ["--status", str(tmp_path / "s.json")]
    done = subprocess.run([sys.executable, "-m", "inferchaos.faults.gpu_hog", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("gpu_hog: error: ")
    assert says in done.stderr
    assert dev.usage().used == 0 and not (tmp_path / "s.json").exists()


def test_vgpu_take_that_no_longer_fits_takes_what_fits(dev, tmp_path):
    dev.allocate(700 * MIB, "server")
    backend = VgpuBackend(tmp_path, 0)
    assert backend.take(1 * GIB) == 324 * MIB  # read 1 GiB free, then the server came first
    assert backend.take(1 * MIB) == 0
    backend.release_all()
    assert dev.usage().used == 700 * MIB


# ------------------------------------------------------------------ pure logic
@pytest.mark.parametrize(("text", "expected"), [
    ("1073741824", 1073741824), ("0", 0), (4096, 4096), ("512MiB", 512 * MIB), ("2GiB", 2 * GIB),
    ("1.5GB", 1_500_000_000), ("1.5 GiB", 3 * GIB // 2), ("2gib", 2 * GIB), ("4Gi", 4 * GIB), ("10k", 10_000),
    ("1TB", 10**12), ("100B", 100), (" 64 MiB ", 64 * MIB), ("0.5KiB", 512),
])
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "-1", "-2GiB", "GiB", "1.5XB", "1e9", "ten", "1 2", -1, True])
def test_parse_bytes_refuses(text):
    with pytest.raises(UsageError):
        parse_bytes(text)


def test_leave_bytes_and_ramp_target():
    assert leave_bytes(1000, 100, None) == 100
    assert leave_bytes(1000, None, 0.25) == 250
    assert target_free(1000, 100, 0, 0) == 100  # no ramp: straight to the target
    assert target_free(1000, 100, 10, 0) == 1000
    assert target_free(1000, 100, 10, 5) == 550
    assert target_free(1000, 100, 10, 10) == 100
    assert target_free(1000, 100, 10, 99) == 100
    assert target_free(50, 100, 10, 5) == 100  # less free than `leave` already: nothing to ramp


def test_take_in_chunks_halves_after_a_failure_and_stops_at_min_chunk():
    budget, asked = [300], []

    def alloc(n: int) -> bool:
        asked.append(n)
        if n > budget[0]:
            return False
        budget[0] -= n
        return True

    assert take_in_chunks(1000, alloc, chunk=256, min_chunk=4) == 300
    assert asked[:4] == [256, 256, 128, 64]
    assert all(n >= 4 for n in asked)
    assert take_in_chunks(100, lambda n: True, chunk=256, min_chunk=1) == 100  # the tail below a chunk
    assert take_in_chunks(100, lambda n: False, chunk=256, min_chunk=1) == 0


# ------------------------------------------------------------------ CUDA, faked at libcudart
class FakeCudart:
    """libcudart's calling conventions: int return codes, out-params via ctypes.byref."""

    ERRORS = {2: b"out of memory", 101: b"invalid device ordinal", 700: b"an illegal memory access was encountered"}

    def __init__(self, total: int, free: int, largest: int | None = None, devices: int = 1) -> None:
        self.total, self.free, self.largest, self.devices = total, free, largest, devices
        self.blocks: dict[int, int] = {}
        self.asked: list[tuple[int, bool]] = []
        self.fail_with: int | None = None
        self._next = 0x7F0000000000

    def cudaSetDevice(self, device: int) -> int:
        return 0 if 0 <= device < self.devices else 101

    def cudaMemGetInfo(self, free, total) -> int:
        free._obj.value, total._obj.value = self.free, self.total
        return 0

    def cudaMalloc(self, ptr, size) -> int:
        size = getattr(size, "value", size)
        if self.fail_with:
            return self.fail_with
        fits = size <= self.free and (self.largest is None or size <= self.largest)
        self.asked.append((size, fits))
        if not fits:
            return CUDA_ERROR_MEMORY_ALLOCATION
        self._next += size
        ptr._obj.value = self._next
        self.blocks[self._next], self.free = size, self.free - size
        return 0

    def cudaFree(self, ptr) -> int:
        size = self.blocks.pop(getattr(ptr, "value", ptr), None)
        if size is None:
            return 1
        self.free += size
        return 0

    def cudaGetErrorString(self, code: int) -> bytes:
        return self.ERRORS.get(code, b"unknown error")


def test_cudart_takes_in_chunks_and_releases():
    lib = FakeCudart(total=4 * GIB, free=3 * GIB)
    backend = CudartBackend(0, lib=lib)
    assert backend.mem_info() == (3 * GIB, 4 * GIB)
    assert backend.take(1 * GIB) == 1 * GIB
    assert lib.asked == [(CHUNK, True)] * 4
    backend.release_all()
    assert lib.free == 3 * GIB and not lib.blocks


def test_cudart_failing_malloc_retries_with_smaller_chunks():
    lib = FakeCudart(total=4 * GIB, free=3 * GIB, largest=100 * MIB)  # fragmented
    backend = CudartBackend(0, lib=lib)
    assert backend.take(1 * GIB) == 1 * GIB
    assert lib.asked[:3] == [(256 * MIB, False), (128 * MIB, False), (64 * MIB, True)]

    lib = FakeCudart(total=4 * GIB, free=300 * MIB + 123)
    backend = CudartBackend(0, lib=lib)
    taken = backend.take(1 * GIB)
    assert 300 * MIB + 123 - MIN_CHUNK < taken <= 300 * MIB + 123
    backend.release_all()
    assert lib.free == 300 * MIB + 123


def test_cudart_other_errors_are_fault_errors_with_cudas_words():
    with pytest.raises(FaultError, match=r"cudaSetDevice\(5\) failed: error 101: invalid device ordinal"):
        CudartBackend(5, lib=FakeCudart(total=GIB, free=GIB))
    lib = FakeCudart(total=GIB, free=GIB)
    backend = CudartBackend(0, lib=lib)
    lib.fail_with = 700
    with pytest.raises(FaultError, match="error 700: an illegal memory access"):
        backend.take(MIB)


def test_hog_loop_on_cuda_holds_the_target_and_grabs_freed_memory():
    lib = FakeCudart(total=4 * GIB, free=3 * GIB + 512 * MIB)
    out = io.StringIO()
    hog = Hog(CudartBackend(0, lib=lib), HogPlan(0, leave=512 * MIB, tick_s=0.01), out=out)
    runner = threading.Thread(target=hog.run)
    runner.start()
    try:
        wait_for(lambda: lib.free == 512 * MIB, what="the hog to leave 512 MiB")
        lib.free += 100 * MIB  # another process freed memory
        wait_for(lambda: lib.free == 512 * MIB and hog.held == 3 * GIB + 100 * MIB, what="the hog to grab it")
    finally:
        hog.stop()
        runner.join(timeout=5)
    assert not lib.blocks and lib.free == 3 * GIB + 612 * MIB
    said = out.getvalue().splitlines()
    assert said[0] == "gpu_hog: device 0 (cudart): total 4.00 GiB, free 3.50 GiB, target free 0.50 GiB"
    assert said[-1] == "gpu_hog: released 3.10 GiB, free 3.60 GiB"


@pytest.mark.skipif(Path("/dev/nvidiactl").exists(), reason="this host has a CUDA driver")
def test_no_cuda_at_all_exits_2_saying_what_was_tried():
    done = subprocess.run([sys.executable, "-m", "inferchaos.faults.gpu_hog", "--device", "0", "--leave", "1GiB", "--cuda"],
                          cwd=ROOT, capture_output=True, text=True, timeout=20)
    assert done.returncode == 2 and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("gpu_hog: error: no CUDA backend for device 0: tried torch (")
    assert "; cupy (" in line and "; libcudart (" in line


def test_byref_out_params_reach_the_fake():
    """The fake must see what real libcudart would: pointers to the caller's variables."""
    free = ctypes.c_size_t()
    FakeCudart(total=8, free=5).cudaMemGetInfo(ctypes.byref(free), ctypes.byref(ctypes.c_size_t()))
    assert free.value == 5


def test_the_cuda_path_runs_end_to_end_against_a_libcudart_at_the_c_boundary(tmp_path):
    """`--cuda` as on a GPU host without torch or cupy: the hog finds libcudart by its soname
    (here the suite's stand-in, first on LD_LIBRARY_PATH), calls it through ctypes, takes
    device memory until `leave` is free, reports it, and gives it back on SIGTERM."""
    from inferchaos.ground import native

    try:
        lib = native.path("cudart")
    except UsageError as exc:
        pytest.skip(str(exc))
    (tmp_path / "libcudart.so").symlink_to(lib)
    status = tmp_path / "hog.json"
    env = {**os.environ, "LD_LIBRARY_PATH": str(tmp_path), "FAKECUDA_MEMORY_BYTES": str(4 * GIB)}
    hog = subprocess.Popen([sys.executable, "-m", "inferchaos.faults.gpu_hog", "--device", "0", "--leave", "1GiB",
                            "--cuda", "--status", str(status)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: status.exists() and json.loads(status.read_text())["held"] == 3 * GIB, what="the hog to take 3 GiB")
        s = json.loads(status.read_text())
        assert s["backend"] == "cudart" and s["free"] == GIB and s["total"] == 4 * GIB, s
    finally:
        hog.send_signal(signal.SIGTERM)
        out, err = hog.communicate(timeout=10)
    assert hog.returncode == 0, err
    assert "released 3.00 GiB, free 4.00 GiB" in out, out


def test_against_nvidias_runtime_without_a_driver_it_says_so_in_one_line(tmp_path):
    """The real libcudart (a CUDA toolkit, no driver, no GPU): its own error, not ours."""
    import glob

    real = sorted(glob.glob("/usr/local/cuda*/lib*/libcudart.so.[0-9]*"))
    if not real or Path("/dev/nvidiactl").exists():
        pytest.skip("no CUDA toolkit here, or a driver is present")
    (tmp_path / "libcudart.so").symlink_to(real[-1])
    done = subprocess.run([sys.executable, "-m", "inferchaos.faults.gpu_hog", "--device", "0", "--leave", "1GiB",
                           "--cuda"], cwd=ROOT, env={**os.environ, "LD_LIBRARY_PATH": str(tmp_path)},
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert re.search(r"libcudart \(cudaSetDevice\(0\) failed: error (35|100): ", line), line
