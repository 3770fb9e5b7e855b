"""The reference server's CUDA calls: one allocation and one kernel launch per batch,
made through the CUDA runtime's own C functions.

The symbols are resolved through the process's global scope (`dlopen(NULL)`), the scope a
PLT call from PyTorch's libc10_cuda resolves through, so whatever is LD_PRELOAD'ed in front
of libcudart (the `cuda_errors` shim) sees these calls exactly as it sees a real server's.
Without a GPU the library is the suite's stand-in (`inferchaos.ground.native`, "cudart"); the
errors it returns, and how the server treats them, are CUDA's:

- out of memory (2): the batch fails; the server exits or rejects (`--oom`), as for a
  full device;
- anything else (an illegal address, an uncorrectable ECC error): the CUDA context is
  lost, every later call fails the same way, and the only way out is a new process.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

OUT_OF_MEMORY = 2


class Dim3(ctypes.Structure):
    _fields_ = [("x", ctypes.c_uint), ("y", ctypes.c_uint), ("z", ctypes.c_uint)]


@dataclass
class CudaError(Exception):
    """A failed CUDA call, worded as PyTorch words it ("CUDA error: out of memory")."""

    code: int
    text: str
    call: str

    @property
    def out_of_memory(self) -> bool:
        return self.code == OUT_OF_MEMORY

    def __str__(self) -> str:
        return f"CUDA error: {self.text} (error {self.code} from {self.call})"


class CudaRuntime:
    """libcudart at `library`, called through the global scope (see the module's docstring)."""

    def __init__(self, library: Path | str) -> None:
        self._lib = ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)  # keeps it loaded, globally visible
        scope = ctypes.CDLL(None)
        vp, size = ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t
        self._malloc = scope.cudaMalloc
        self._malloc.argtypes, self._malloc.restype = [vp, size], ctypes.c_int
        self._free = scope.cudaFree
        self._free.argtypes, self._free.restype = [ctypes.c_void_p], ctypes.c_int
        self._launch = scope.cudaLaunchKernel
        self._launch.argtypes = [ctypes.c_void_p, Dim3, Dim3, ctypes.c_void_p, size, ctypes.c_void_p]
        self._launch.restype = ctypes.c_int
        self._last = scope.cudaGetLastError
        self._last.restype = ctypes.c_int
        self._text = scope.cudaGetErrorString
        self._text.argtypes, self._text.restype = [ctypes.c_int], ctypes.c_char_p
        self._kernel = ctypes.c_void_p(ctypes.cast(self._text, ctypes.c_void_p).value)  # any code address

    def _check(self, code: int, call: str) -> None:
        if code:
            self._last()  # consumed, as PyTorch's C10_CUDA_CHECK does
            raise CudaError(code, (self._text(code) or b"unknown error").decode(), call)

    def malloc(self, nbytes: int) -> int:
        ptr = ctypes.c_void_p()
        self._check(self._malloc(ctypes.byref(ptr), nbytes), "cudaMalloc")
        return ptr.value or 0

    def launch(self) -> None:
        one = Dim3(1, 1, 1)
        self._check(self._launch(self._kernel, one, one, None, 0, None), "cudaLaunchKernel")

    def free(self, ptr: int) -> None:
        self._check(self._free(ptr), "cudaFree")
