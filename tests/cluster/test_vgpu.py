"""The virtual GPU ledger: shared between processes, freed when an owner dies."""

import subprocess
import sys

import pytest

from inferchaos.targets.local.vgpu import GIB, MIB, DeviceOutOfMemory, VirtualDevice


def test_allocations_add_up_and_free_is_idempotent(tmp_path):
    dev = VirtualDevice.create(tmp_path, 0, 4 * GIB)
    dev.allocate(1 * GIB, "weights")
    dev.allocate(512 * MIB, "batch-1")
    assert dev.usage().used == 1 * GIB + 512 * MIB
    assert dev.free("batch-1") == 512 * MIB
    assert dev.free("batch-1") == 0
    assert dev.usage().free == 3 * GIB


def test_exhaustion_raises_cuda_like_error_and_takes_nothing(tmp_path):
    dev = VirtualDevice.create(tmp_path, 3, 1 * GIB)
    dev.allocate(900 * MIB, "weights")
    with pytest.raises(DeviceOutOfMemory, match=r"CUDA out of memory. Tried to allocate 200.00 MiB \(GPU 3"):
        dev.allocate(200 * MIB, "batch")
    assert dev.usage().used == 900 * MIB


def test_memory_of_another_process_is_seen_and_freed_when_it_dies(tmp_path):
    VirtualDevice.create(tmp_path, 0, 2 * GIB)
    code = (
        "import sys, time; from inferchaos.targets.local.vgpu import VirtualDevice, GIB;"
        f"VirtualDevice({str(tmp_path)!r}, 0).allocate(GIB, 'hog'); print('held', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        dev = VirtualDevice(tmp_path, 0)
        assert dev.usage().used == GIB
        with pytest.raises(DeviceOutOfMemory):
            dev.allocate(GIB + 1, "mine")
    finally:
        proc.kill()
        proc.wait()
    assert VirtualDevice(tmp_path, 0).usage().used == 0


def test_capacity_must_be_positive(tmp_path):
    with pytest.raises(ValueError):
        VirtualDevice.create(tmp_path, 0, 0)
