"""A stand-in for the few torch calls the device script and the memory hog make, over the
suite's stand-in libcudart (FAKE_TORCH_CUDART), called through the process's global scope
as libc10_cuda's calls are: an LD_PRELOAD'ed shim sees them as it sees torch's. Errors are
raised with torch's classes and first words."""

from __future__ import annotations

import ctypes
import os
import types

from inferchaos.targets.local.cuda import CudaError, CudaRuntime

__version__ = "0.0+stand-in"
uint8, float32 = 1, 4  # bytes per element
_rt: CudaRuntime | None = None


def _runtime() -> CudaRuntime:
    global _rt
    if _rt is None:
        _rt = CudaRuntime(os.environ["FAKE_TORCH_CUDART"])
    return _rt


class version:  # noqa: N801 - torch.version
    cuda = "stand-in"


class AcceleratorError(RuntimeError):
    pass


def _raise(exc: CudaError) -> None:
    if exc.out_of_memory:
        raise cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate (stand-in): {exc}") from None
    raise AcceleratorError(f"CUDA error: {exc.text}") from None


class device:  # noqa: N801
    def __init__(self, kind: str, index: int = 0) -> None:
        self.kind, self.index = kind, index


class Tensor:
    def __init__(self, nbytes: int) -> None:
        try:
            self.ptr = _runtime().malloc(max(nbytes, 1))
        except CudaError as exc:
            _raise(exc)
        cuda.allocated += nbytes
        self.nbytes = nbytes

    def _kernel(self) -> Tensor:
        try:
            _runtime().launch()
        except CudaError as exc:
            _raise(exc)
        return self

    def __mul__(self, other: object) -> Tensor:
        return self._kernel()

    def sum(self) -> Tensor:
        return self._kernel()

    def item(self) -> float:
        return 0.0

    def __del__(self) -> None:
        try:
            _runtime().free(self.ptr)
            cuda.allocated -= self.nbytes
        except Exception:  # noqa: BLE001 - a lost context frees nothing, as torch's does
            pass


def empty(n: int, dtype: int = float32, device: object = None) -> Tensor:
    return Tensor(n * dtype)


def zeros(n: int, device: object = None) -> Tensor:
    return Tensor(n * float32)


def arange(n: int, device: object = None, dtype: int = float32) -> Tensor:
    return Tensor(n * dtype)._kernel()


class cuda:  # noqa: N801 - torch.cuda
    allocated = 0

    class OutOfMemoryError(RuntimeError):
        pass

    @staticmethod
    def is_available() -> bool:
        return bool(os.environ.get("FAKE_TORCH_CUDART"))

    @staticmethod
    def device_count() -> int:
        return 1

    @staticmethod
    def get_device_properties(device: object = None) -> object:
        return types.SimpleNamespace(name="stand-in GPU", uuid="1f0e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")

    @staticmethod
    def mem_get_info(device: object = None) -> tuple[int, int]:
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        _runtime()
        ctypes.CDLL(None).cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total))
        return free.value, total.value

    @staticmethod
    def synchronize(device: object = None) -> None:
        code = ctypes.CDLL(None).cudaDeviceSynchronize()
        if code:
            _raise(CudaError(code, "device synchronize failed", "cudaDeviceSynchronize"))

    @staticmethod
    def empty_cache() -> None: ...

    @staticmethod
    def memory_allocated(device: object = None) -> int:
        return cuda.allocated

    @staticmethod
    def memory_reserved(device: object = None) -> int:
        return cuda.allocated
