"""The cuda_errors shim at the lowest boundary there is without a GPU: a real C program
linked against libcudart and libcuda (stand-ins with the same symbol names, sonames and
symbol versions, built here), with the shim LD_PRELOAD'ed between them exactly as it sits
between PyTorch and the real libraries on a device. Where NVIDIA's CUDA toolkit is
installed (nvcc and the real shared libcudart; no driver or GPU needed), a real CUDA
program with a real kernel runs under the shim too, and the stand-in's wording is
checked against the real runtime's.

What a call returned is read from the program; whether it reached the library behind the
shim is read from that library's own counters. Nothing of the shim's code is imported.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
import subprocess
import time
from pathlib import Path

import pytest

from inferchaos.ground import native

HERE = Path(__file__).resolve().parents[1]  # tests/
CLIENT_SRC = HERE / "native" / "cuda_client.c"
OOM, ILLEGAL_ADDRESS, ECC = 2, 700, 214

pytestmark = pytest.mark.skipif(not (os.environ.get("CC") or shutil.which("cc")), reason="no C compiler")


@pytest.fixture(scope="module")
def libs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fakes, the shim and the client, compiled into one folder for this module."""
    d = tmp_path_factory.mktemp("cuda")
    for name in ("cudart", "cuda", "cuda_shim"):
        lib = native.LIBRARIES[name]
        native.compile_library(lib, d / lib.filename)
    subprocess.run([native.compiler(), "-O2", "-Wall", "-Werror", "-o", str(d / "client"), str(CLIENT_SRC),
                    f"-L{d}", "-l:libcudart.so.12", "-l:libcuda.so.1", f"-Wl,-rpath,{d}"], check=True)
    return d


class Client:
    """One process of the client, driven a line at a time."""

    def __init__(self, libs: Path, trigger: Path | None, preload: bool = True, recheck_ms: int = 0) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "INFERCHAOS_CUDA_TRIGGER")}
        if preload:
            env["LD_PRELOAD"] = str(libs / native.LIBRARIES["cuda_shim"].filename)
        if trigger is not None:
            env["INFERCHAOS_CUDA_TRIGGER"] = str(trigger)
        env["INFERCHAOS_CUDA_RECHECK_MS"] = str(recheck_ms)
        self.proc = subprocess.Popen([str(libs / "client")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)

    def __call__(self, line: str) -> int:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.close()
        assert self.proc.wait(10) == 0


@pytest.fixture
def trigger(tmp_path: Path) -> Path:
    (tmp_path / "cuda").mkdir()
    return tmp_path / "cuda" / "device0.trigger"


def arm(trigger: Path, text: str) -> None:
    trigger.parent.mkdir(parents=True, exist_ok=True)
    tmp = trigger.with_name(trigger.name + ".new")
    tmp.write_text(text + "\n")
    os.replace(tmp, trigger)


def status(trigger: Path, pid: int) -> dict[str, str]:
    text = trigger.with_name(f"{trigger.name}.status.{pid}").read_text()
    return dict(kv.split("=", 1) for kv in text.split())


ALLOCS = ("malloc 1048576", "malloc_async 4096", "malloc_managed 4096")
DRIVER_ALLOCS = ("cu_malloc 4096", "cu_malloc_async 4096")


def test_without_a_trigger_every_call_reaches_the_library(libs: Path, trigger: Path) -> None:
    c = Client(libs, trigger)
    assert [c(a) for a in ALLOCS + DRIVER_ALLOCS] == [0] * 5
    assert c("launch") == 0 and c("graph") == 0 and c("cu_launch") == 0 and c("free") == 0
    assert c("calls malloc") == 3 and c("calls launch") == 1 and c("calls graph") == 1 and c("calls free") == 1
    assert c("driver_calls malloc") == 2 and c("driver_calls launch") == 1
    pid = c.proc.pid
    c.close()
    s = status(trigger, pid)
    assert s["armed"] == "0" and s["allocs"] == "5" and s["alloc_failed"] == "0", s


def test_allocations_fail_on_trigger_and_succeed_after_revert_in_one_process(libs: Path, trigger: Path) -> None:
    c = Client(libs, trigger)
    assert c("malloc 1024") == 0 and c("calls malloc") == 1
    arm(trigger, "id=t1 alloc=oom")
    assert [c(a) for a in ALLOCS + DRIVER_ALLOCS] == [OOM] * 5
    assert c("calls malloc") == 1 and c("driver_calls malloc") == 0, "a failed call must not reach the library"
    assert c("last") == OOM and c("last") == 0, "the runtime's last error is set once, as CUDA's is"
    assert c("launch") == 0, "launches are not allocations"
    s = status(trigger, c.proc.pid)
    assert s["id"] == "t1" and s["armed"] == "1" and int(s["alloc_failed"]) >= 1, s
    trigger.unlink()  # the revert
    assert [c(a) for a in ALLOCS + DRIVER_ALLOCS] == [0] * 5
    assert c("calls malloc") == 4 and c("driver_calls malloc") == 2
    c.close()
    s = status(trigger, c.proc.pid)
    assert s["armed"] == "0" and s["alloc_failed"] == "5", s


def test_the_default_recheck_sees_a_change_within_a_few_ms(libs: Path, trigger: Path) -> None:
    c = Client(libs, trigger, recheck_ms=10)
    assert c("malloc 1") == 0
    arm(trigger, "alloc=oom")
    time.sleep(0.05)
    assert c("malloc 1") == OOM
    trigger.unlink()
    time.sleep(0.05)
    assert c("malloc 1") == 0
    c.close()


def test_after_a_count_the_errors_start(libs: Path, trigger: Path) -> None:
    arm(trigger, "alloc=oom after=3")
    c = Client(libs, trigger)
    assert [c("malloc 1") for _ in range(6)] == [0, 0, 0, OOM, OOM, OOM]
    c.close()


def test_a_rate_fails_that_share_the_same_way_for_the_same_seed(libs: Path, trigger: Path) -> None:
    arm(trigger, "alloc=oom rate=0.3 seed=7")
    runs = []
    for _ in range(2):
        c = Client(libs, trigger)
        runs.append([c("malloc 1") for _ in range(400)])
        c.close()
    assert runs[0] == runs[1], "one seed, one sequence"
    share = runs[0].count(OOM) / 400
    assert 0.2 < share < 0.4, share
    assert set(runs[0]) == {0, OOM}


#: every launch form the shim intercepts, with the stand-in's counter it reaches when disarmed
LAUNCHES = (("launch", "calls launch"), ("launch_ex", "calls launch"), ("graph", "calls graph"),
            ("cu_launch", "driver_calls launch"), ("cu_launch_ex", "driver_calls launch"),
            ("cu_graph", "driver_calls graph"))


@pytest.mark.parametrize("launch, counter", LAUNCHES, ids=[name for name, _ in LAUNCHES])
def test_each_launch_form_reaches_the_library_disarmed_and_fails_armed(libs: Path, trigger: Path, launch: str,
                                                                       counter: str) -> None:
    c = Client(libs, trigger)
    assert c(launch) == 0 and c(counter) == 1
    arm(trigger, "id=l launch=700")
    assert c(launch) == ILLEGAL_ADDRESS and c(counter) == 1, "a failed launch must not reach the library"
    c.close()  # the status written at exit holds every count
    s = status(trigger, c.proc.pid)
    assert s["sticky"] == "700" and s["launch_failed"] == "1", s


@pytest.mark.parametrize("code", [ILLEGAL_ADDRESS, ECC])
def test_a_launch_error_is_sticky_like_a_lost_context(libs: Path, trigger: Path, code: int) -> None:
    c = Client(libs, trigger)
    assert c("launch") == 0 and c("malloc 1") == 0
    arm(trigger, f"id=x launch={code} launch_after=1")
    assert c("launch") == 0, "launch_after=1: one more launch succeeds"
    assert c("launch") == code
    trigger.unlink()  # removing the trigger does not bring a lost context back
    assert [c("malloc 1"), c("cu_malloc 1"), c("sync"), c("free"), c("graph"), c("cu_launch"), c("last"),
            c("peek")] == [code] * 8
    assert c("calls launch") == 2 and c("calls malloc") == 1 and c("calls sync") == 0
    s = status(trigger, c.proc.pid)
    assert s["sticky"] == str(code) and int(s["launch_failed"]) >= 1, s
    c.close()
    c2 = Client(libs, trigger)  # a new process gets a new context
    assert c2("launch") == 0 and c2("malloc 1") == 0
    c2.close()


def test_the_shim_reaches_a_versioned_reference_as_the_real_librarys_callers_have(libs: Path, trigger: Path) -> None:
    """PyTorch's references to cudaMalloc are bound to the version libcudart.so.12; the
    shim, unversioned, must still be the one the dynamic linker picks."""
    if shutil.which("objdump") is None:
        pytest.skip("objdump (binutils) is not installed")
    dyn = subprocess.run(["objdump", "-T", str(libs / "client")], capture_output=True, text=True, check=True).stdout
    assert any("(libcudart.so.12)" in line and line.endswith(" cudaMalloc") for line in dyn.splitlines()), dyn
    arm(trigger, "alloc=oom")
    c = Client(libs, trigger)
    assert c("malloc 1") == OOM
    c.close()


def test_without_the_preload_the_trigger_does_nothing(libs: Path, trigger: Path) -> None:
    """The planted no-op at this boundary: the same trigger, no shim in the process."""
    arm(trigger, "alloc=oom launch=700")
    c = Client(libs, trigger, preload=False)
    assert c("malloc 1") == 0 and c("launch") == 0 and c("calls malloc") == 1
    c.close()
    assert not list(trigger.parent.glob("*.status.*"))


def test_the_reference_servers_runtime_calls_go_through_the_shim(libs: Path, trigger: Path, tmp_path: Path) -> None:
    """The server resolves cudaMalloc through the process's global scope (as a PLT call
    does), so a Python process with the shim preloaded fails the same way."""
    code = ("import sys; from inferchaos.targets.local.cuda import CudaRuntime, CudaError\n"
            f"rt = CudaRuntime({str(libs / 'libcudart.so.12')!r})\n"
            "rt.free(rt.malloc(64)); rt.launch()\n"
            "print('ok', flush=True); sys.stdin.readline()\n"
            "try:\n    rt.malloc(64)\nexcept CudaError as e:\n    print(e)\n")
    env = {**os.environ, "LD_PRELOAD": str(libs / "libinferchaos_cudashim.so"), "INFERCHAOS_CUDA_TRIGGER": str(trigger),
           "INFERCHAOS_CUDA_RECHECK_MS": "0"}
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=env)
    assert proc.stdout and proc.stdin
    assert proc.stdout.readline().strip() == "ok"
    arm(trigger, "alloc=oom")
    out, _ = proc.communicate("go\n", timeout=20)
    assert out.strip() == "CUDA error: out of memory (error 2 from cudaMalloc)"


# ------------------------------------------------------------------ NVIDIA's own runtime
def nvcc() -> str | None:
    found = shutil.which("nvcc") or sorted(glob.glob("/usr/local/cuda*/bin/nvcc"))
    return found if isinstance(found, str) else (found[-1] if found else None)


@pytest.fixture(scope="module")
def real_app(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """tests/native/cuda_app.cu built by nvcc twice: against the shared libcudart (as
    PyTorch links it) and the static one (nvcc's default)."""
    compiler = nvcc()
    if compiler is None:
        pytest.skip("NVIDIA's CUDA toolkit (nvcc) is not installed")
    d = tmp_path_factory.mktemp("cuda-real")
    out = {}
    for how in ("shared", "static"):
        out[how] = d / f"app-{how}"
        subprocess.run([compiler, "-cudart", how, "-o", str(out[how]), str(HERE / "native" / "cuda_app.cu")],
                       check=True, capture_output=True, timeout=300)
    return out


def drive(app: Path, lines: list[str], env: dict[str, str] | None = None) -> list[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "INFERCHAOS_CUDA_TRIGGER")}
    res = subprocess.run([str(app)], input="\n".join(lines) + "\n", capture_output=True, text=True,
                         env={**full, **(env or {})}, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout.split("\n")[:-1]


def shimmed(libs: Path, trigger: Path) -> dict[str, str]:
    return {"LD_PRELOAD": str(libs / "libinferchaos_cudashim.so"), "INFERCHAOS_CUDA_TRIGGER": str(trigger),
            "INFERCHAOS_CUDA_RECHECK_MS": "0"}


def test_a_real_cuda_program_fails_on_trigger_and_reaches_the_real_runtime_after(libs, trigger, real_app):
    app = real_app["shared"]
    real = drive(app, ["malloc 1024", "launch"])  # no driver here: the runtime's own answer, e.g. 35
    assert drive(app, ["malloc 1024", "launch"], shimmed(libs, trigger)) == real, "unarmed: every call reaches it"
    arm(trigger, "alloc=oom")
    assert drive(app, ["malloc 1024"], shimmed(libs, trigger)) == [str(OOM)]
    arm(trigger, f"launch={ILLEGAL_ADDRESS}")
    assert drive(app, ["launch", "malloc 1024"], shimmed(libs, trigger)) == [str(ILLEGAL_ADDRESS)] * 2, \
        "a <<<>>> launch (nvcc's __cudaLaunchKernel) fails, and the lost context fails what follows"
    trigger.unlink()
    assert drive(app, ["malloc 1024", "launch"], shimmed(libs, trigger)) == real


def test_a_statically_linked_runtime_cannot_be_reached(libs, trigger, real_app):
    """The boundary of the method, shown: no libcudart symbol to interpose (nvcc's default
    -cudart static). The fault's landing check is what catches it: no error returned."""
    app = real_app["static"]
    real = drive(app, ["malloc 1024"])
    arm(trigger, "alloc=oom")
    assert drive(app, ["malloc 1024"], shimmed(libs, trigger)) == real != [str(OOM)]


def test_the_stand_in_says_what_the_real_runtime_says(libs, real_app):
    codes = [0, OOM, 3, 101, ECC, ILLEGAL_ADDRESS]
    real = drive(real_app["shared"], [f"text {c}" for c in codes])
    c = subprocess.run([str(libs / "client")], input="".join(f"text {c}\n" for c in codes), capture_output=True,
                       text=True, timeout=30)
    assert c.stdout.split("\n")[:-1] == real
