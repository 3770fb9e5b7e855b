/*
 * A stand-in CUDA driver (libcuda.so.1): the driver-API calls the `cuda_errors` shim
 * intercepts, answering without a device, and counting what reached it.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;
typedef void *CUstream;
typedef void *CUfunction;
typedef void *CUgraphExec;

static long n_alloc, n_free, n_launch, n_graph;
static CUdeviceptr next_ptr = 0x100000;

long fakecuda_driver_calls(const char *what) {
    if (!strcmp(what, "malloc")) return n_alloc;
    if (!strcmp(what, "free")) return n_free;
    if (!strcmp(what, "launch")) return n_launch;
    if (!strcmp(what, "graph")) return n_graph;
    return -1;
}

CUresult cuInit(unsigned int flags) { (void)flags; return 0; }

static CUresult take(CUdeviceptr *p, size_t n) {
    n_alloc++;
    *p = next_ptr;
    next_ptr += (n + 255) & ~(size_t)255;
    return 0;
}

CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t n) { return take(p, n); }
CUresult cuMemAllocAsync(CUdeviceptr *p, size_t n, CUstream s) { (void)s; return take(p, n); }
CUresult cuMemAllocManaged(CUdeviceptr *p, size_t n, unsigned int f) { (void)f; return take(p, n); }
CUresult cuMemFree_v2(CUdeviceptr p) { (void)p; n_free++; return 0; }

CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
                        unsigned int by, unsigned int bz, unsigned int sh, CUstream s, void **pa, void **ex) {
    (void)f; (void)gx; (void)gy; (void)gz; (void)bx; (void)by; (void)bz; (void)sh; (void)s; (void)pa; (void)ex;
    n_launch++;
    return 0;
}

CUresult cuLaunchKernelEx(const void *config, CUfunction f, void **pa, void **ex) {
    (void)config; (void)f; (void)pa; (void)ex;
    n_launch++;
    return 0;
}

CUresult cuGraphLaunch(CUgraphExec g, CUstream s) { (void)g; (void)s; n_graph++; return 0; }

CUresult cuGetErrorString(CUresult e, const char **s) {
    switch (e) {
    case 0: *s = "no error"; break;
    case 2: *s = "out of memory"; break;
    case 214: *s = "uncorrectable ECC error encountered"; break;
    case 700: *s = "an illegal memory access was encountered"; break;
    default: *s = "unknown error"; break;
    }
    return 0;
}
