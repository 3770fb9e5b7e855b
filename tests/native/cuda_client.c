/*
 * A CUDA application in miniature: linked against libcudart and libcuda (-lcudart -lcuda),
 * so its calls go through the PLT and the dynamic linker exactly as PyTorch's do, and an
 * LD_PRELOAD'ed shim sits between it and the libraries. Driven line by line on stdin so a
 * test can change the trigger between two calls of one process; prints one result a line.
 *
 *   malloc N | malloc_async N | malloc_managed N | cu_malloc N | cu_malloc_async N
 *   free                 frees what the last runtime malloc returned
 *   launch | graph | cu_launch | cu_graph | sync | last | peek
 *   calls WHAT           what reached the runtime library (malloc, launch, ...)
 *   driver_calls WHAT    what reached the driver library
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { unsigned int x, y, z; } dim3;
typedef unsigned long long CUdeviceptr;
int cudaMalloc(void **, size_t);
int cudaMallocAsync(void **, size_t, void *);
int cudaMallocManaged(void **, size_t, unsigned int);
int cudaFree(void *);
int cudaLaunchKernel(const void *, dim3, dim3, void **, size_t, void *);
int cudaGraphLaunch(void *, void *);
int cudaLaunchKernelExC(const void *, const void *, void **);
int cudaDeviceSynchronize(void);
int cudaGetLastError(void);
int cudaPeekAtLastError(void);
const char *cudaGetErrorString(int);
int cuMemAlloc_v2(CUdeviceptr *, size_t);
int cuMemAllocAsync(CUdeviceptr *, size_t, void *);
int cuLaunchKernel(void *, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, void *, void **,
                   void **);
int cuGraphLaunch(void *, void *);
int cuLaunchKernelEx(const void *, void *, void **, void **);
long fakecuda_calls(const char *);
long fakecuda_driver_calls(const char *);

static void kernel(void) {}

int main(void) {
    char line[256], cmd[64], arg[128];
    void *last = NULL;
    setvbuf(stdout, NULL, _IOLBF, 0);
    while (fgets(line, sizeof line, stdin)) {
        arg[0] = '\0';
        if (sscanf(line, "%63s %127s", cmd, arg) < 1) continue;
        size_t n = (size_t)strtoull(arg, NULL, 10);
        long r;
        void *p = NULL;
        CUdeviceptr d = 0;
        dim3 one = {1, 1, 1};
        if (!strcmp(cmd, "malloc")) { r = cudaMalloc(&p, n); if (!r) last = p; }
        else if (!strcmp(cmd, "malloc_async")) { r = cudaMallocAsync(&p, n, NULL); if (!r) last = p; }
        else if (!strcmp(cmd, "malloc_managed")) { r = cudaMallocManaged(&p, n, 1); if (!r) last = p; }
        else if (!strcmp(cmd, "free")) { r = cudaFree(last); last = NULL; }
        else if (!strcmp(cmd, "cu_malloc")) r = cuMemAlloc_v2(&d, n);
        else if (!strcmp(cmd, "cu_malloc_async")) r = cuMemAllocAsync(&d, n, NULL);
        else if (!strcmp(cmd, "launch")) r = cudaLaunchKernel((const void *)kernel, one, one, NULL, 0, NULL);
        else if (!strcmp(cmd, "launch_ex")) r = cudaLaunchKernelExC(NULL, (const void *)kernel, NULL);
        else if (!strcmp(cmd, "graph")) r = cudaGraphLaunch(NULL, NULL);
        else if (!strcmp(cmd, "cu_launch")) r = cuLaunchKernel(NULL, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL);
        else if (!strcmp(cmd, "cu_launch_ex")) r = cuLaunchKernelEx(NULL, NULL, NULL, NULL);
        else if (!strcmp(cmd, "cu_graph")) r = cuGraphLaunch(NULL, NULL);
        else if (!strcmp(cmd, "sync")) r = cudaDeviceSynchronize();
        else if (!strcmp(cmd, "last")) r = cudaGetLastError();
        else if (!strcmp(cmd, "peek")) r = cudaPeekAtLastError();
        else if (!strcmp(cmd, "calls")) r = fakecuda_calls(arg);
        else if (!strcmp(cmd, "driver_calls")) r = fakecuda_driver_calls(arg);
        else if (!strcmp(cmd, "text")) { printf("%s\n", cudaGetErrorString(atoi(arg))); continue; }
        else { printf("unknown %s\n", cmd); continue; }
        printf("%ld\n", r);
    }
    return 0;
}
