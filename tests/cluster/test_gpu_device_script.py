"""bench/gpu_device.py, the one script a session lent a GPU runs: here (no GPU) it must say
so in one line and write nothing, refuse bad input, and, through stand-ins for torch and
NVML (tests/fakegpu), run every step to the end, with the real memory hog and the real
shim in torch's place, and leave no process behind. Its figures on a real device are
what docs/results.md reports; the stand-ins' are not figures of anything."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from inferchaos.ground import native
from tests.support.waiting import wait_for
from inferchaos.targets.local.processes import pid_alive

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_device.py"


def run(args: list[str], env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=ROOT)


def nvml_sees_a_gpu() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except Exception:  # noqa: BLE001 - no library, no driver: no GPU
        return False


def test_without_a_device_it_says_so_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    if nvml_sees_a_gpu():
        pytest.skip("this machine has a GPU: the script would run for real")
    out = tmp_path / "out"
    proc = run(["--out", str(out)])
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_device: no CUDA device: "), proc.stderr
    assert "NVML" in lines[0] or "nvidia-ml-py" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize("args, says", [
    (["--device", "-1"], "--device must be 0 or more"),
    (["--hold-mib", "0"], "--hold-mib must be more than 0"),
    (["--leave-mib", "-5"], "--leave-mib must be 0 or more"),
    (["--shim", "/nonexistent/libshim.so"], "--shim /nonexistent/libshim.so: no such file"),
    (["--hold-mib", "lots"], "invalid int value"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], says: str) -> None:
    proc = run([*args, "--out", str(tmp_path / "out")])
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_device: error: ") and says in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()


def test_every_step_runs_to_the_end_through_stand_ins(tmp_path: Path) -> None:
    """Stand-in torch calls the stand-in libcudart through the global scope, as libc10_cuda
    does: the shim's failures reach the worker as torch's exception classes."""
    out = tmp_path / "out"
    proc = run(["--out", str(out), "--hold-mib", "512", "--leave-mib", "1024"],
               env={"PYTHONPATH": str(ROOT / "tests" / "fakegpu"), "FAKE_TORCH_CUDART": str(native.path("cudart"))})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads((out / "gpu_device.json").read_text())

    hog = r["hog_vs_holder"]
    assert "broke" not in hog, hog
    assert hog["holder_alloc"]["ok"] and hog["holder_alloc_after_hog"]["ok"], hog
    assert hog["hog_status"]["backend"] == "torch" and hog["hog_status"]["held"] > 0
    assert hog["hog_exit"] == 0 and any("released" in line for line in hog["hog_log"]), hog
    assert set(hog["nvml"]) == {"before", "with_holder", "during_hog", "at_holder_oom", "after_hog", "after"}

    shim = r["shim_vs_torch"]
    assert "broke" not in shim and "skipped" not in shim, shim
    assert shim["alloc_disarmed"]["ok"] and shim["alloc_reverted"]["ok"] and shim["kernel_disarmed"]["ok"], shim
    assert not shim["alloc_armed"]["ok"] and "OutOfMemoryError" in shim["alloc_armed"]["error_type"], shim
    assert shim["alloc_armed"]["error_first_line"].startswith("CUDA out of memory")
    for k in ("kernel_armed", "kernel_after_revert"):  # launch errors are sticky, as on a device
        assert not shim[k]["ok"] and "illegal memory access" in shim[k]["error"], shim[k]
    assert shim["shim_loaded"] is True
    oom, end = shim["status_after_oom"], shim["status_at_exit"]
    assert (oom["id"], int(oom["alloc_failed"]) >= 1) == ("device-oom", True), oom
    # at exit: the armed allocation and, once the launch error stuck, the reverted kernel's
    # allocation (its launch is never reached); one failed launch
    assert (int(end["alloc_failed"]), int(end["launch_failed"]), end["sticky"]) == (2, 1, "700"), end
    assert r["meta"]["nvml_found_by"] == "uuid"  # the GPU torch uses, found in NVML by its UUID

    probe = r["nvml_probe"]
    assert probe["measured"] and probe["hog_vs_holder"]["samples"] >= 2, probe
    assert probe["hog_vs_holder"]["observed"]["gpu_power_peak_w"] == 61.0  # the stand-in NVML's 61,000 mW
    assert probe["xid_watch"].startswith("XID events not watched"), probe["xid_watch"]
    assert "shim alloc_armed: " in proc.stdout and "figures in" in proc.stdout

    pids = [hog["hog_status"]["pid"], hog["holder_start"]["pid"], shim["start"]["pid"]]
    assert not [p for p in pids if pid_alive(p)], pids


def test_the_readme_command_is_one_the_script_accepts(tmp_path: Path) -> None:
    """The command a later session runs unchanged: its options parse (exit 3 here, not 2)."""
    if nvml_sees_a_gpu():
        pytest.skip("this machine has a GPU: the script would run for real")
    readme = (ROOT / "docs" / "faults.md").read_text()
    (line,) = [ln for ln in readme.splitlines() if ln.startswith("PYTHONUNBUFFERED=1 python3 bench/gpu_device.py")]
    args = line.split("bench/gpu_device.py", 1)[1].split()
    assert args[:2] == ["--out", "$OUT"] and "--shim" in args
    shim = tmp_path / "libinferchaos_cudashim.so"
    shim.write_bytes(native.path("cuda_shim").read_bytes())
    args = [str(tmp_path / "out") if a == "$OUT" else str(shim) if a.startswith(".native/") else a for a in args]
    proc = run(args)
    assert proc.returncode == 3, proc.stderr


def test_a_shim_that_cannot_load_skips_the_step_instead_of_passing_it(tmp_path: Path) -> None:
    """ld.so only warns about an LD_PRELOAD it cannot load: without the check, the armed
    allocation would succeed and read as a shim that does nothing."""
    bad = tmp_path / "libinferchaos_cudashim.so"
    bad.write_bytes(b"\x7fELF not really")
    out = tmp_path / "out"
    proc = run(["--out", str(out), "--hold-mib", "512", "--leave-mib", "1024", "--shim", str(bad)],
               env={"PYTHONPATH": str(ROOT / "tests" / "fakegpu"), "FAKE_TORCH_CUDART": str(native.path("cudart"))})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shim = json.loads((out / "gpu_device.json").read_text())["shim_vs_torch"]
    assert shim["shim_loaded"] is False and "did not load" in shim["skipped"], shim
    assert "alloc_armed" not in shim


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_stopped_while_the_hog_holds_it_leaves_no_process(tmp_path: Path, sig: int) -> None:
    """SIGTERM unwinds through the steps' cleanup; after SIGKILL the children end by the
    parent-death signal they were started with (a device run cut off at its limit)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests" / "fakegpu"),
           "FAKE_TORCH_CUDART": str(native.path("cudart"))}
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--out", str(tmp_path / "out"), "--hold-mib", "512",
                             "--leave-mib", "1024"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: len(children(proc.pid)) >= 2, 60, "the holder and the hog to start")  # held 2 s
        kids = children(proc.pid)
        proc.send_signal(sig)
        proc.wait(30)
        wait_for(lambda: not [k for k in kids if pid_alive(k)], 20, f"{kids} to end after the script's {sig!r}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if sig == signal.SIGTERM:
        r = json.loads((tmp_path / "out" / "gpu_device.json").read_text())
        assert r["stopped"].startswith("SIGTERM"), r
