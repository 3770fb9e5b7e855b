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
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef int cudaError_t;
typedef struct { unsigned int x, y, z; } dim3;
typedef void *cudaStream_t;
typedef void *cudaGraphExec_t;

static long n_malloc, n_free, n_launch, n_graph, n_sync;

long fakecuda_calls(const char *what) {
    if (!strcmp(what, "malloc")) return n_malloc;
    if (!strcmp(what, "free")) return n_free;
    if (!strcmp(what, "launch")) return n_launch;
    if (!strcmp(what, "graph")) return n_graph;
    if (!strcmp(what, "sync")) return n_sync;
    return -1;
}

static cudaError_t take(void **p, size_t n) {
    (void)n;
    n_malloc++;
    *p = malloc(1); /* a unique address; no memory of that size is behind it */
    return *p ? 0 : 2;
}

cudaError_t cudaMalloc(void **p, size_t n) { return take(p, n); }
cudaError_t cudaMallocAsync(void **p, size_t n, cudaStream_t s) { (void)s; return take(p, n); }
cudaError_t cudaMallocManaged(void **p, size_t n, unsigned int f) { (void)f; return take(p, n); }
cudaError_t cudaFree(void *p) { n_free++; free(p); return 0; }
cudaError_t cudaFreeAsync(void *p, cudaStream_t s) { (void)s; return cudaFree(p); }

cudaError_t cudaLaunchKernel(const void *f, dim3 g, dim3 b, void **a, size_t sh, cudaStream_t s) {
    (void)f; (void)g; (void)b; (void)a; (void)sh; (void)s;
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
