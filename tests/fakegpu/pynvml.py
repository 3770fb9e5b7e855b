"""A stand-in NVML for the device script's dry run: one device, fixed readings, and no XID
events (as NVML answers on many virtual machines). Not for the probe's own tests, which
replace NVML's functions in process (tests/unit/test_gpu_probe.py)."""

from types import SimpleNamespace

NVML_TEMPERATURE_GPU = 0
nvmlEventTypeXidCriticalError = 8
TOTAL = 16 * 2**30
UUID = "GPU-1f0e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"  # as torch's stand-in names it, with NVML's prefix


class NVMLError(Exception):
    pass


class NVMLError_NotSupported(NVMLError):  # noqa: N801 - NVML's own name
    pass


class NVMLError_Timeout(NVMLError):  # noqa: N801
    pass


def nvmlInit() -> None: ...
def nvmlShutdown() -> None: ...
def nvmlDeviceGetCount() -> int: return 1
def nvmlDeviceGetHandleByIndex(i: int) -> int: return i
def nvmlDeviceGetName(h: int) -> str: return "stand-in GPU"
def nvmlDeviceGetUUID(h: int) -> str: return UUID
def nvmlDeviceGetIndex(h: int) -> int: return h


def nvmlDeviceGetHandleByUUID(uuid: str) -> int:
    if uuid != UUID:
        raise NVMLError(f"Not Found: {uuid}")
    return 0


def nvmlSystemGetDriverVersion() -> str: return "stand-in"
def nvmlDeviceGetMemoryInfo(h: int) -> SimpleNamespace: return SimpleNamespace(used=2**30, free=TOTAL - 2**30, total=TOTAL)
def nvmlDeviceGetUtilizationRates(h: int) -> SimpleNamespace: return SimpleNamespace(gpu=7, memory=1)
def nvmlDeviceGetPowerUsage(h: int) -> int: return 61_000
def nvmlDeviceGetTemperature(h: int, sensor: int) -> int: return 41
def nvmlDeviceGetComputeRunningProcesses(h: int) -> list: return []


def nvmlEventSetCreate() -> None:
    raise NVMLError_NotSupported("Not Supported")
