"""GPU telemetry through NVML, sampled through a run, and XID critical errors as they happen.

The GPU-OOM fault and the replicas' cold starts show up here first: device memory climbs,
a process takes memory it should not, the driver reports an XID. Every NVML call goes
through the module (`pynvml.nvmlX(...)`) so tests substitute functions at the NVML
boundary, never our own code.

A machine without a GPU (or without the driver, or without permission) is not a healthy
GPU: the run says `measured=False` with NVML's own reason, and every observation it
yields is missing, so an SLO on it fails as "not measured" rather than passing.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, ClassVar, Sequence

try:
    import pynvml
except ImportError:  # the `gpu` extra (nvidia-ml-py) is not installed
    pynvml = None

from inferchaos.probes.measure import FRACTION, Bound, Measure
from inferchaos.probes.probe import BaseProbe, Measurement, RunView
from inferchaos.targets.capabilities import GPU

#: The observations a GPU run yields, for SLO objectives.
GPU_KEYS = ("gpu_memory_peak_frac", "gpu_memory_peak_bytes", "gpu_utilization_mean_pct", "gpu_power_peak_w",
            "gpu_temperature_peak_c", "gpu_xid_errors")

#: the GPU keys an objective may be set on (the rest are reported only); NVML and DCGM yield the same.
GPU_MEASURES: tuple[Measure, ...] = (
    Measure("gpu_memory_peak_frac", "<=", "fraction", "peak device memory in use / total on any GPU (inject -> end, "
            "NVML)", FRACTION, window="after_inject"),
    Measure("gpu_xid_errors", "<=", "errors", "XID critical errors NVML reported (inject -> end)",
            Bound(0.0, integer=True), window="after_inject"),
    Measure("gpu_power_peak_w", "<=", "W", "peak board power on any GPU (inject -> end, NVML)", window="after_inject"),
    Measure("gpu_temperature_peak_c", "<=", "C", "peak temperature on any GPU (inject -> end, NVML)",
            window="after_inject"),
)

NOT_MEASURED = "not measured: "


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    uuid: str


@dataclass(frozen=True)
class ProcessMemory:
    pid: int
    #: None where the driver cannot say (WDDM, some containers): unknown, not zero.
    used_bytes: int | None


@dataclass(frozen=True)
class GpuSample:
    """One reading of one device. A figure the device does not support is None."""

    t: float
    device: int
    memory_used_bytes: int
    memory_total_bytes: int
    utilization_pct: float | None
    power_w: float | None
    temperature_c: float | None
    processes: tuple[ProcessMemory, ...]

    @property
    def memory_frac(self) -> float | None:
        return self.memory_used_bytes / self.memory_total_bytes if self.memory_total_bytes > 0 else None


@dataclass(frozen=True)
class XidEvent:
    """An XID critical error: `t` on the run's monotonic clock, `wall` for display."""

    t: float
    wall: float
    device: int | None
    xid: int


@dataclass(frozen=True)
class GpuRun:
    """What a probe saw. `measured` False: nothing was, and `reason` says why."""

    measured: bool
    reason: str
    start: float
    end: float
    devices: tuple[DeviceInfo, ...] = ()
    samples: tuple[GpuSample, ...] = ()
    xid_events: tuple[XidEvent, ...] = ()
    #: None when XID events were watched for the whole run; else why they were not.
    xid_unwatched: str | None = None
    #: Readings that failed mid-run (a lost GPU), one line each.
    errors: tuple[str, ...] = ()


def nvml_reason(exc: BaseException) -> str:
    """NVML's own words for a failure, with what it means on a test machine."""
    hints = {
        "NVMLError_LibraryNotFound": "no NVIDIA driver library on this machine",
        "NVMLError_DriverNotLoaded": "the NVIDIA kernel driver is not loaded",
        "NVMLError_NoPermission": "this user may not query the GPU",
    }
    name = type(exc).__name__
    try:
        text = str(exc)
    except Exception:  # str() of an unknown code asks the library, which may be missing
        text = f"NVML error {getattr(exc, 'value', '?')}"
    hint = hints.get(name)
    text = text if text.startswith("NVML") else f"NVML {text}"
    return f"{text} ({name}{': ' + hint if hint else ''})"


def _optional(fn: Callable[[], float]) -> float | None:
    """A figure some devices do not report (power on many boards): None, not a failure."""
    try:
        return fn()
    except pynvml.NVMLError_NotSupported:
        return None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class GpuProbe:
    """Samples every `interval_s` in a thread, and watches XID events in another.

    `start()` never raises for a missing GPU: the run it ends with says not measured."""

    def __init__(self, interval_s: float = 1.0, devices: Sequence[int] | None = None,
                 xid_timeout_ms: int = 200, clock: Callable[[], float] = time.monotonic) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.interval_s = interval_s
        self.xid_timeout_ms = xid_timeout_ms
        self._want = None if devices is None else tuple(devices)
        self._clock = clock
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._handles: list[tuple[DeviceInfo, object]] = []
        self._samples: list[GpuSample] = []
        self._xids: list[XidEvent] = []
        self._errors: list[str] = []
        self._xid_unwatched: str | None = None
        self._failure: str | None = None
        self._initialised = False
        self._started = False
        self._start = self._end = 0.0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> GpuProbe:
        self._start = self._clock()
        self._started = True
        if pynvml is None:
            self._failure = NOT_MEASURED + "nvidia-ml-py is not installed (pip install 'inferchaos[gpu]')"
            return self
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            self._failure = NOT_MEASURED + nvml_reason(exc)
            return self
        self._initialised = True
        try:
            self._handles = self._open_devices()
        except pynvml.NVMLError as exc:
            self._failure = NOT_MEASURED + nvml_reason(exc)
        if not self._handles and self._failure is None:
            self._failure = NOT_MEASURED + "NVML found no GPU on this machine"
        if self._failure is not None:
            self._shutdown()
            return self
        self._sample_all()
        self._spawn(self._sample_loop, "gpu-sampler")
        self._spawn(self._xid_loop, "gpu-xid")
        return self

    def stop(self) -> GpuRun:
        """Stop both threads and return the run. Safe to call twice."""
        if self._end:
            return self.run()
        self._stop.set()
        stuck = []
        for t in self._threads:
            t.join(timeout=self.xid_timeout_ms / 1000 + 5.0)
            if t.is_alive():
                stuck.append(t.name)
        if self._initialised and not self._failure and not stuck and self._threads:
            self._sample_all()  # the state at the end of the run
        self._threads = []
        self._end = self._clock()
        if stuck:  # a thread still inside NVML: shutting NVML down under it would crash
            self._errors.append("did not stop in time: " + ", ".join(stuck))
        else:
            self._shutdown()
        return self.run()

    def run(self) -> GpuRun:
        """The run so far (or as it ended)."""
        end = self._end or self._clock()
        if not self._started:
            return GpuRun(False, NOT_MEASURED + "the GPU probe was never started", end, end)
        if self._failure is not None:
            return GpuRun(False, self._failure, self._start, end)
        with self._lock:
            return GpuRun(True, "", self._start, end, tuple(info for info, _ in self._handles),
                          tuple(self._samples), tuple(self._xids), self._xid_unwatched, tuple(self._errors))

    def __enter__(self) -> GpuProbe:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ sampling
    def _open_devices(self) -> list[tuple[DeviceInfo, object]]:
        count = pynvml.nvmlDeviceGetCount()
        indices = range(count) if self._want is None else [i for i in self._want if 0 <= i < count]
        opened = []
        for i in indices:
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            info = DeviceInfo(i, _text(pynvml.nvmlDeviceGetName(h)), _text(pynvml.nvmlDeviceGetUUID(h)))
            opened.append((info, h))
        return opened

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(t)
        t.start()

    def _sample_loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample_all()

    def _sample_all(self) -> None:
        for info, h in self._handles:
            try:
                s = self._read(info.index, h)
            except pynvml.NVMLError as exc:
                with self._lock:
                    self._errors.append(f"GPU {info.index}: {nvml_reason(exc)}")
                continue
            with self._lock:
                self._samples.append(s)

    def _read(self, index: int, h: object) -> GpuSample:
        t = self._clock()
        mem = pynvml.nvmlDeviceGetMemoryInfo(h)
        util = _optional(lambda: float(pynvml.nvmlDeviceGetUtilizationRates(h).gpu))
        power = _optional(lambda: pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0)  # mW -> W
        temp = _optional(lambda: float(pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)))
        try:
            procs = tuple(ProcessMemory(int(p.pid), None if p.usedGpuMemory is None else int(p.usedGpuMemory))
                          for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h))
        except pynvml.NVMLError:  # not supported, or not permitted (containers, some guests): unknown
            procs = ()
        return GpuSample(t, index, int(mem.used), int(mem.total), util, power, temp, procs)

    # ------------------------------------------------------------------ XID events
    def _xid_loop(self) -> None:
        """`nvmlEventSetWait` blocks in C, so it waits here with a timeout and looks at the
        stop flag between waits."""
        try:
            event_set = pynvml.nvmlEventSetCreate()
        except pynvml.NVMLError as exc:
            self._xid_unwatched = f"XID events not watched: {nvml_reason(exc)}"
            return
        try:
            registered = 0
            for info, h in self._handles:
                try:
                    pynvml.nvmlDeviceRegisterEvents(h, pynvml.nvmlEventTypeXidCriticalError, event_set)
                    registered += 1
                except pynvml.NVMLError as exc:
                    self._xid_unwatched = f"XID events not watched on GPU {info.index}: {nvml_reason(exc)}"
            if not registered:
                return
            by_uuid = {info.uuid: info.index for info, _ in self._handles}
            while not self._stop.is_set():
                try:
                    data = pynvml.nvmlEventSetWait(event_set, self.xid_timeout_ms)
                except pynvml.NVMLError_Timeout:
                    continue
                except pynvml.NVMLError as exc:
                    self._xid_unwatched = f"XID watch ended early: {nvml_reason(exc)}"
                    return
                if data.eventType & pynvml.nvmlEventTypeXidCriticalError:
                    event = XidEvent(self._clock(), time.time(), self._device_of(data, by_uuid), int(data.eventData))
                    with self._lock:
                        self._xids.append(event)
        finally:
            try:
                pynvml.nvmlEventSetFree(event_set)
            except pynvml.NVMLError:
                pass

    @staticmethod
    def _device_of(data: object, by_uuid: dict[str, int]) -> int | None:
        try:
            return by_uuid.get(_text(pynvml.nvmlDeviceGetUUID(data.device)))  # type: ignore[attr-defined]
        except pynvml.NVMLError:
            return None

    def _shutdown(self) -> None:
        if self._initialised:
            self._initialised = False
            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError:
                pass


# ---------------------------------------------------------------------- observations
def _span(run: GpuRun, start: float | None, end: float | None) -> tuple[float, float]:
    return (run.start if start is None else start, run.end if end is None else end)


def observed_from_gpu(run: GpuRun, start: float | None = None, end: float | None = None) -> dict[str, float | None]:
    """The run's figures over [start, end) (default: the whole run), worst device first:
    peaks for memory, power and temperature, the mean for utilisation, the XID count.
    Missing values are None; `reasons_from_gpu` says why."""
    observed: dict[str, float | None] = {key: None for key in GPU_KEYS}
    if not run.measured:
        return observed
    lo, hi = _span(run, start, end)
    samples = [s for s in run.samples if lo <= s.t < hi]
    fracs = [s.memory_frac for s in samples if s.memory_frac is not None]
    utils = [s.utilization_pct for s in samples if s.utilization_pct is not None]
    observed["gpu_memory_peak_frac"] = max(fracs, default=None)
    observed["gpu_memory_peak_bytes"] = max((float(s.memory_used_bytes) for s in samples), default=None)
    observed["gpu_utilization_mean_pct"] = sum(utils) / len(utils) if utils else None
    observed["gpu_power_peak_w"] = max((s.power_w for s in samples if s.power_w is not None), default=None)
    observed["gpu_temperature_peak_c"] = max((s.temperature_c for s in samples if s.temperature_c is not None),
                                             default=None)
    if run.xid_unwatched is None:
        observed["gpu_xid_errors"] = float(sum(1 for e in run.xid_events if lo <= e.t < hi))
    return observed


def reasons_from_gpu(run: GpuRun, start: float | None = None, end: float | None = None) -> dict[str, str]:
    """Why each missing value of `observed_from_gpu` is missing, for `probes.verdict.judge`
    (which adds "not measured: " itself)."""
    if not run.measured:
        why = run.reason.removeprefix(NOT_MEASURED)
        return {key: why for key in GPU_KEYS}
    lo, hi = _span(run, start, end)
    observed = observed_from_gpu(run, start, end)
    span = f"[{lo:.1f}, {hi:.1f})"
    reasons = {}
    if not any(lo <= s.t < hi for s in run.samples):
        errors = f" ({run.errors[-1]})" if run.errors else ""
        reasons = {key: f"no GPU sample in window {span}{errors}" for key in GPU_KEYS if key != "gpu_xid_errors"}
    else:
        for key, what in (("gpu_utilization_mean_pct", "utilisation"), ("gpu_power_peak_w", "power"),
                          ("gpu_temperature_peak_c", "temperature"), ("gpu_memory_peak_frac", "memory capacity")):
            if observed[key] is None:
                reasons[key] = f"the GPU does not report {what} (NVML: not supported)"
    if run.xid_unwatched is not None:
        reasons["gpu_xid_errors"] = run.xid_unwatched
    return reasons


# ---------------------------------------------------------------------- as a probe
@dataclass
class GpuObserver(BaseProbe):
    """NVML sampled through the run where the runner runs, judged inject -> end."""

    name: str = "gpu"
    keys: tuple[str, ...] = GPU_KEYS
    measures: ClassVar[tuple[Measure, ...]] = GPU_MEASURES
    needs: frozenset[str] = frozenset({GPU})
    interval_s: float = 0.5
    run: GpuRun | None = None

    def start(self) -> None:
        self._probe = GpuProbe(interval_s=self.interval_s).start()

    def stop(self) -> None:
        self.run = self._probe.stop()

    def report(self) -> GpuRun | None:
        return self.run

    def observe(self, run: RunView) -> list[Measurement]:
        assert self.run is not None
        start, end = run.span("after_inject")
        values, why = observed_from_gpu(self.run, start, end), reasons_from_gpu(self.run, start, end)
        return [Measurement(k, values.get(k), why.get(k)) for k in self.keys]
