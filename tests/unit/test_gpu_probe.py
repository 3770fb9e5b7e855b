"""The GPU probe at the NVML function boundary: a fake NVML stands in for the driver (no GPU
here), and one test runs the real `pynvml` to prove a GPU-less machine is "not measured"."""

from __future__ import annotations

import queue
import threading
import time
from types import SimpleNamespace

import pynvml
import pytest

from inferchaos.probes.gpu import GPU_KEYS, GpuProbe, observed_from_gpu, reasons_from_gpu
from inferchaos.probes.slo import Objective
from inferchaos.probes.verdict import judge, verdict
from tests.support.waiting import wait_for

GIB = 1024**3


class FakeNvml:
    """Two devices with fixed figures; XID events are fed through `emit`."""

    def __init__(self) -> None:
        self.devices = [
            dict(name="NVIDIA H100", uuid="GPU-aaa", used=30 * GIB, total=80 * GIB, util=40, power_mw=312_500,
                 temp=61, procs=[SimpleNamespace(pid=101, usedGpuMemory=20 * GIB),
                                 SimpleNamespace(pid=102, usedGpuMemory=None)]),
            dict(name=b"NVIDIA H100", uuid=b"GPU-bbb", used=60 * GIB, total=80 * GIB, util=90, power_mw=650_000,
                 temp=77, procs=[]),
        ]
        self.events: queue.Queue = queue.Queue()
        self.calls: list[str] = []
        self.waiting = threading.Event()
        self.freed = False
        self.shutdowns = 0

    def install(self, mp: pytest.MonkeyPatch) -> FakeNvml:
        h = lambda i: ("handle", i)  # noqa: E731
        dev = lambda handle: self.devices[handle[1]]  # noqa: E731
        mp.setattr(pynvml, "nvmlInit", lambda: self.calls.append("init"))
        mp.setattr(pynvml, "nvmlShutdown", self._shutdown)
        mp.setattr(pynvml, "nvmlDeviceGetCount", lambda: len(self.devices))
        mp.setattr(pynvml, "nvmlDeviceGetHandleByIndex", h)
        mp.setattr(pynvml, "nvmlDeviceGetName", lambda handle: dev(handle)["name"])
        mp.setattr(pynvml, "nvmlDeviceGetUUID", lambda handle: dev(handle)["uuid"])
        mp.setattr(pynvml, "nvmlDeviceGetMemoryInfo",
                   lambda handle: SimpleNamespace(used=dev(handle)["used"], total=dev(handle)["total"],
                                                  free=dev(handle)["total"] - dev(handle)["used"]))
        mp.setattr(pynvml, "nvmlDeviceGetUtilizationRates",
                   lambda handle: SimpleNamespace(gpu=dev(handle)["util"], memory=10))
        mp.setattr(pynvml, "nvmlDeviceGetPowerUsage", lambda handle: dev(handle)["power_mw"])
        mp.setattr(pynvml, "nvmlDeviceGetTemperature", lambda handle, sensor: dev(handle)["temp"])
        mp.setattr(pynvml, "nvmlDeviceGetComputeRunningProcesses", lambda handle: dev(handle)["procs"])
        mp.setattr(pynvml, "nvmlEventSetCreate", lambda: "event-set")
        mp.setattr(pynvml, "nvmlDeviceRegisterEvents", lambda handle, types, es: self.calls.append(f"register {types}"))
        mp.setattr(pynvml, "nvmlEventSetWait", self._wait)
        mp.setattr(pynvml, "nvmlEventSetFree", lambda es: setattr(self, "freed", True))
        return self

    def _shutdown(self) -> None:
        self.shutdowns += 1

    def _wait(self, event_set: object, timeout_ms: int) -> object:
        assert event_set == "event-set"
        self.waiting.set()
        try:
            return self.events.get(timeout=timeout_ms / 1000)
        except queue.Empty:
            raise pynvml.NVMLError_Timeout() from None

    def emit(self, device: int, xid: int) -> None:
        self.events.put(SimpleNamespace(device=("handle", device), eventType=pynvml.nvmlEventTypeXidCriticalError,
                                        eventData=xid, gpuInstanceId=0, computeInstanceId=0))


@pytest.fixture
def nvml(monkeypatch):
    return FakeNvml().install(monkeypatch)


def test_two_devices_sampled_with_the_right_figures(nvml):
    with GpuProbe(interval_s=0.05, xid_timeout_ms=50) as probe:
        wait_for(lambda: len(probe.run().samples) >= 6, 10, "three rounds of samples")
    run = probe.run()
    assert run.measured and run.reason == ""
    assert [(d.index, d.name, d.uuid) for d in run.devices] == [(0, "NVIDIA H100", "GPU-aaa"),
                                                                 (1, "NVIDIA H100", "GPU-bbb")]
    first = {s.device: s for s in run.samples[:2]}
    assert first[0].memory_used_bytes == 30 * GIB and first[0].memory_total_bytes == 80 * GIB
    assert first[0].memory_frac == pytest.approx(0.375)
    assert first[0].power_w == pytest.approx(312.5)  # milliwatts became watts
    assert first[1].power_w == pytest.approx(650.0)
    assert first[0].utilization_pct == 40 and first[1].temperature_c == 77
    assert [(p.pid, p.used_bytes) for p in first[0].processes] == [(101, 20 * GIB), (102, None)]
    assert first[1].processes == ()
    assert run.errors == () and run.xid_unwatched is None

    observed = observed_from_gpu(run)
    assert observed["gpu_memory_peak_frac"] == pytest.approx(0.75)
    assert observed["gpu_memory_peak_bytes"] == 60 * GIB
    assert observed["gpu_power_peak_w"] == pytest.approx(650.0)
    assert observed["gpu_temperature_peak_c"] == 77
    assert observed["gpu_utilization_mean_pct"] == pytest.approx(65.0)
    assert observed["gpu_xid_errors"] == 0
    assert reasons_from_gpu(run) == {}
    assert nvml.shutdowns == 1 and nvml.freed


def test_memory_objective_is_breached_on_purpose(nvml):
    with GpuProbe(interval_s=0.05) as probe:
        pass
    results = judge([Objective("gpu_memory_peak_frac", "<=", 0.5, "fraction")], observed_from_gpu(probe.run()))
    assert verdict(results) == "fail" and "observed 0.75" in results[0].detail


def test_an_unsupported_figure_is_missing_not_zero(nvml, monkeypatch):
    def unsupported(handle):
        raise pynvml.NVMLError_NotSupported()

    monkeypatch.setattr(pynvml, "nvmlDeviceGetPowerUsage", unsupported)
    with GpuProbe(interval_s=0.05) as probe:
        pass
    run = probe.run()
    assert run.measured and all(s.power_w is None for s in run.samples)
    assert observed_from_gpu(run)["gpu_power_peak_w"] is None
    assert "power" in reasons_from_gpu(run)["gpu_power_peak_w"]


@pytest.mark.parametrize("error", [pynvml.NVMLError_NotSupported, pynvml.NVMLError_NoPermission])
def test_a_process_list_it_may_not_read_costs_the_list_not_the_sample(nvml, monkeypatch, error):
    """Containers and some guests refuse the per-process list: memory, power and the rest
    are still read, and the processes are unknown (empty), not a failed sample."""
    def refuse(handle):
        raise error()

    monkeypatch.setattr(pynvml, "nvmlDeviceGetComputeRunningProcesses", refuse)
    with GpuProbe(interval_s=0.05) as probe:
        pass
    run = probe.run()
    assert run.measured and run.errors == () and run.samples, run
    assert all(s.processes == () for s in run.samples)
    assert observed_from_gpu(run)["gpu_memory_peak_frac"] == pytest.approx(0.75)


@pytest.mark.parametrize("error, words", [
    (pynvml.NVMLError_LibraryNotFound, "NVML Shared Library Not Found"),
    (pynvml.NVMLError_DriverNotLoaded, "Driver Not Loaded"),
    (pynvml.NVMLError_NoPermission, "Insufficient Permissions"),
    (pynvml.NVMLError_Unknown, "Unknown Error"),
    (lambda: pynvml.NVMLError(1234), "NVML Error with code 1234"),  # a code this pynvml does not know
])
def test_init_failure_is_not_measured(nvml, monkeypatch, error, words):
    def fail():
        raise error()

    monkeypatch.setattr(pynvml, "nvmlInit", fail)
    with GpuProbe(interval_s=0.05) as probe:
        pass
    run = probe.run()
    assert not run.measured
    assert run.reason.startswith("not measured: ") and words in run.reason, run.reason
    assert run.samples == () and nvml.shutdowns == 0  # nothing to shut down after a failed init
    assert observed_from_gpu(run) == {key: None for key in GPU_KEYS}
    reasons = reasons_from_gpu(run)
    assert set(reasons) == set(GPU_KEYS) and words in reasons["gpu_xid_errors"]
    results = judge([Objective("gpu_xid_errors", "<=", 0, "count")], observed_from_gpu(run), reasons)
    assert verdict(results) == "fail"
    assert results[0].detail.startswith("not measured: NVML"), results[0].detail


def test_a_probe_never_started_measured_nothing(nvml):
    run = GpuProbe().stop()
    assert not run.measured and "never started" in run.reason and nvml.calls == []


def test_no_device_is_not_measured(nvml):
    nvml.devices = []
    with GpuProbe() as probe:
        pass
    assert not probe.run().measured and "no GPU" in probe.run().reason
    assert nvml.shutdowns == 1


def test_xid_event_is_recorded_with_its_time(nvml):
    with GpuProbe(interval_s=0.05, xid_timeout_ms=50) as probe:
        wait_for(nvml.waiting.is_set, 10, "the XID watcher to wait")
        before = time.monotonic()
        nvml.emit(1, 79)  # XID 79: GPU has fallen off the bus
        wait_for(lambda: probe.run().xid_events, 10, "the XID event")
        after = time.monotonic()
    assert "register 8" in nvml.calls  # nvmlEventTypeXidCriticalError
    (event,) = probe.run().xid_events
    assert event.device == 1 and event.xid == 79
    assert before <= event.t <= after and abs(event.wall - time.time()) < 60
    assert observed_from_gpu(probe.run())["gpu_xid_errors"] == 1
    assert observed_from_gpu(probe.run(), start=after + 1)["gpu_xid_errors"] == 0


def test_unsupported_xid_events_leave_the_count_not_measured(nvml, monkeypatch):
    def refuse(handle, types, es):
        raise pynvml.NVMLError_NotSupported()

    monkeypatch.setattr(pynvml, "nvmlDeviceRegisterEvents", refuse)
    with GpuProbe(interval_s=0.05) as probe:
        pass
    run = probe.run()
    assert run.measured and observed_from_gpu(run)["gpu_xid_errors"] is None
    assert "Not Supported" in reasons_from_gpu(run)["gpu_xid_errors"]


def test_sampler_and_watcher_stop_cleanly(nvml):
    before = {t.name for t in threading.enumerate()}
    probe = GpuProbe(interval_s=0.05, xid_timeout_ms=100).start()
    wait_for(nvml.waiting.is_set, 10, "the XID watcher to wait")
    assert {"gpu-sampler", "gpu-xid"} <= {t.name for t in threading.enumerate()}
    t0 = time.monotonic()
    run = probe.stop()
    assert time.monotonic() - t0 < 5
    assert not {"gpu-sampler", "gpu-xid"} & ({t.name for t in threading.enumerate()} - before)
    assert run.errors == () and nvml.freed and nvml.shutdowns == 1
    count = len(run.samples)
    assert probe.stop().samples == run.samples and len(probe.run().samples) == count  # idempotent, no more samples
    assert nvml.shutdowns == 1


def test_a_device_lost_mid_run_is_an_error_line(nvml, monkeypatch):
    with GpuProbe(interval_s=0.05, xid_timeout_ms=50) as probe:
        wait_for(lambda: probe.run().samples, 10, "a sample")

        def lost(handle):
            raise pynvml.NVMLError_GpuIsLost()

        monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", lost)
        wait_for(lambda: probe.run().errors, 10, "the lost GPU")
    assert "GPU is lost" in probe.run().errors[0]
    later = time.monotonic()
    assert "no GPU sample" in reasons_from_gpu(probe.run(), start=later, end=later + 1)["gpu_memory_peak_frac"]


def test_real_nvml_on_this_machine_does_not_pass():
    """No monkeypatching: the real library on whatever machine runs the suite."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        has_gpu = False
    else:
        has_gpu = pynvml.nvmlDeviceGetCount() > 0
        pynvml.nvmlShutdown()
    if has_gpu:
        pytest.skip("this machine has an NVIDIA GPU; the not-measured path needs one without")
    with GpuProbe(interval_s=0.05) as probe:
        pass
    run = probe.run()
    assert not run.measured and run.reason.startswith("not measured: NVML"), run.reason
    results = judge([Objective("gpu_memory_peak_frac", "<=", 0.9, "fraction")], observed_from_gpu(run),
                    reasons_from_gpu(run))
    assert verdict(results) == "fail" and results[0].observed is None
