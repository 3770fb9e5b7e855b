/*
 * A stand-in CUDA runtime (libcudart.so.12) for machines without a GPU: the same symbol
 * names, the same versioned soname and calling conventions, no device behind them.
 *
 * The reference server calls it exactly where a real server calls CUDA (an allocation
 * and a launch per batch), resolving the symbols through the dynamic linker as a PLT
 * call does, so the `cuda_errors` shim intercepts the reference server the way it
 * intercepts PyTorch. Device memory itself is accounted by the virtual GPU ledger
 * (targets/local/vgpu.py); this library only answers, and counts what reached it
 * (`fakecuda_calls`), which is how tests see that the shim passed a call on.
 *
 * For a caller that asks the device itself (the GPU-OOM hog's libcudart backend), it is
 * one device per process of $FAKECUDA_MEMORY_BYTES (default 16 GiB): cudaMalloc fails with
 * out-of-memory past it and cudaMemGetInfo says what is free. Unlike a GPU, that memory
 * is not shared between processes (the virtual GPU ledger is what is).
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef int cudaError_t;
typedef struct { unsigned int x, y, z; } dim3;
typedef void *cudaStream_t;
typedef void *cudaGraphExec_t;

static long n_malloc, n_free, n_launch, n_graph, n_sync;
static size_t used;

static size_t capacity(void) {
    const char *env = getenv("FAKECUDA_MEMORY_BYTES");
    return env ? (size_t)strtoull(env, NULL, 10) : (size_t)16 << 30;
}

long fakecuda_calls(const char *what) {
    if (!strcmp(what, "malloc")) return n_malloc;
    if (!strcmp(what, "free")) return n_free;
    if (!strcmp(what, "launch")) return n_launch;
    if (!strcmp(what, "graph")) return n_graph;
    if (!strcmp(what, "sync")) return n_sync;
    return -1;
}

static cudaError_t take(void **p, size_t n) {
    n_malloc++;
    if (n > capacity() - used) return 2;
    size_t *block = malloc(sizeof(size_t)); /* a unique address holding the size; nothing behind it */
    if (!block) return 2;
    *block = n;
    used += n;
    *p = block;
    return 0;
}

cudaError_t cudaMalloc(void **p, size_t n) { return take(p, n); }
cudaError_t cudaMallocAsync(void **p, size_t n, cudaStream_t s) { (void)s; return take(p, n); }
cudaError_t cudaMallocManaged(void **p, size_t n, unsigned int f) { (void)f; return take(p, n); }
cudaError_t cudaFree(void *p) {
    n_free++;
    if (p) {
        used -= *(size_t *)p;
        free(p);
    }
    return 0;
}

cudaError_t cudaSetDevice(int device) { return device == 0 ? 0 : 101; /* cudaErrorInvalidDevice */ }
cudaError_t cudaGetDeviceCount(int *n) { *n = 1; return 0; }

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total) {
    *total = capacity();
    *free_bytes = *total - used;
    return 0;
}
cudaError_t cudaFreeAsync(void *p, cudaStream_t s) { (void)s; return cudaFree(p); }

cudaError_t cudaLaunchKernel(const void *f, dim3 g, dim3 b, void **a, size_t sh, cudaStream_t s) {
    (void)f; (void)g; (void)b; (void)a; (void)sh; (void)s;
    n_launch++;
    return 0;
}

cudaError_t cudaLaunchKernelExC(const void *config, const void *f, void **a) {
    (void)config; (void)f; (void)a;
    n_launch++;
    return 0;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t g, cudaStream_t s) { (void)g; (void)s; n_graph++; return 0; }
cudaError_t cudaDeviceSynchronize(void) { n_sync++; return 0; }
cudaError_t cudaStreamSynchronize(cudaStream_t s) { (void)s; n_sync++; return 0; }
cudaError_t cudaGetLastError(void) { return 0; }
cudaError_t cudaPeekAtLastError(void) { return 0; }

/* The runtime's own wording (cuda_runtime_api.h, CUDA 12), which PyTorch prints after "CUDA error: ". */
const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case 0: return "no error";
    case 2: return "out of memory";
    case 3: return "initialization error";
    case 101: return "invalid device ordinal";
    case 214: return "uncorrectable ECC error encountered";
    case 700: return "an illegal memory access was encountered";
    default: return "unknown error";
    }
}

const char *cudaGetErrorName(cudaError_t e) {
    switch (e) {
    case 0: return "cudaSuccess";
    case 2: return "cudaErrorMemoryAllocation";
    case 3: return "cudaErrorInitializationError";
    case 214: return "cudaErrorECCUncorrectable";
    case 700: return "cudaErrorIllegalAddress";
    default: return "cudaErrorUnknown";
    }
}
