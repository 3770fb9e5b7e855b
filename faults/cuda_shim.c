/*
 * The `cuda_errors` fault's shim: LD_PRELOAD'ed into a serving process, it sits between
 * the server and the CUDA runtime/driver and makes their calls fail the way a full or a
 * broken GPU makes them fail, while the trigger says so.
 *
 * Why a shim and not a hog: a memory hog shows what NVML sees (memory gone), but only a
 * failing call shows what the application does with the error: PyTorch raises its
 * OutOfMemoryError, vLLM's engine dies, a server that catches it keeps answering 500s
 * with its health check green. Both signals are needed; this is the application's one.
 *
 * No CUDA headers: the few prototypes are declared here with the ABI the real ones have.
 * The real functions are found with dlsym(RTLD_NEXT) (libcudart loaded with the process,
 * or RTLD_GLOBAL), else in an already-loaded libcudart/libcuda (RTLD_NOLOAD), which is
 * where Python extension modules put it.
 *
 * Environment (read once, at load):
 *   INFERCHAOS_CUDA_TRIGGER=PATH   the trigger file; without it the shim only passes calls on
 *   INFERCHAOS_CUDA_RECHECK_MS=N   how stale the trigger may be (default 10 ms; 0: every call)
 *
 * The trigger file, absent = pass everything on; present = whitespace-separated key=value:
 *   id=TEXT        echoed in the status file, so the injector knows its trigger was read
 *   alloc=oom      allocations (cudaMalloc*, cuMemAlloc*) return out-of-memory (2)
 *   after=N        ... after N more successful allocations in this process
 *   rate=P         ... each with probability P (0..1, default 1), seed=S for the sequence
 *   launch=CODE    kernel and graph launches (cudaLaunchKernel, nvcc 13's __cudaLaunchKernel,
 *                  cudaLaunchKernelExC, their _ptsz forms, cudaGraphLaunch, cuLaunchKernel,
 *                  cuLaunchKernelEx, cuGraphLaunch) return
 *                  CODE (700 illegal address, 214 ECC uncorrectable) after launch_after=N
 *                  more successful launches. Such an
 *                  error is sticky, as on a device: every intercepted call of this process
 *                  returns it from then on, whatever the trigger says later.
 *
 * Status: PATH.status.PID, one line of key=value (pid, id, armed, counts, sticky), written
 * at load, when the trigger changes, and after injected errors (at most every 100 ms).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef int cudaError_t;
typedef int CUresult;
typedef struct { unsigned int x, y, z; } dim3;
typedef void *cudaStream_t;
typedef void *CUstream;
typedef void *CUfunction;
typedef void *cudaGraphExec_t;
typedef void *cudaKernel_t;
typedef void *CUgraphExec;
typedef unsigned long long CUdeviceptr;

enum { OOM = 2, NOT_INITIALIZED = 3 };

static const char *const RUNTIME_LIBS[] = {"libcudart.so.12", "libcudart.so.13", "libcudart.so.11.0",
                                           "libcudart.so", NULL};
static const char *const DRIVER_LIBS[] = {"libcuda.so.1", "libcuda.so", NULL};

struct trigger {
    int armed;
    char id[128];
    int alloc_oom;
    long after;
    double rate;
    unsigned long long seed;
    int launch;
    long launch_after;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static char trigger_path[4096];
static char status_path[4200];
static long recheck_ns = 10 * 1000000L;
static struct trigger trig;
static struct timespec file_mtime;
static ino_t file_ino;
static off_t file_size;
static long long last_check_ns = -1;
static long long last_status_ns;
static unsigned long long rng;
static long allocs, alloc_failed, launches, launch_failed;
static long allocs_left, launches_left; /* successes still due before errors start */
static int sticky;
static __thread int pending; /* the injected error cudaGetLastError reports once */

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void write_status(void) {
    if (!status_path[0]) return;
    char tmp[4300], line[512];
    snprintf(tmp, sizeof tmp, "%s.tmp", status_path);
    int n = snprintf(line, sizeof line,
                     "pid=%d id=%s armed=%d allocs=%ld alloc_failed=%ld launches=%ld launch_failed=%ld sticky=%d\n",
                     (int)getpid(), trig.id[0] ? trig.id : "-", trig.armed, allocs, alloc_failed, launches,
                     launch_failed, sticky);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return;
    ssize_t w = write(fd, line, (size_t)n);
    close(fd);
    if (w == n) rename(tmp, status_path);
    else unlink(tmp);
    last_status_ns = now_ns();
}

static void parse(char *text) {
    struct trigger t = {.armed = 1, .after = 0, .rate = 1.0, .seed = 1, .launch = 0, .launch_after = 0};
    for (char *save = NULL, *tok = strtok_r(text, " \t\r\n", &save); tok; tok = strtok_r(NULL, " \t\r\n", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq) continue;
        *eq = '\0';
        const char *v = eq + 1;
        if (!strcmp(tok, "id")) snprintf(t.id, sizeof t.id, "%s", v);
        else if (!strcmp(tok, "alloc")) t.alloc_oom = !strcmp(v, "oom");
        else if (!strcmp(tok, "after")) t.after = atol(v);
        else if (!strcmp(tok, "rate")) t.rate = atof(v);
        else if (!strcmp(tok, "seed")) t.seed = strtoull(v, NULL, 10);
        else if (!strcmp(tok, "launch")) t.launch = atoi(v);
        else if (!strcmp(tok, "launch_after")) t.launch_after = atol(v);
    }
    trig = t;
    allocs_left = t.after;
    launches_left = t.launch_after;
    rng = t.seed ? t.seed : 1;
}

/* Re-read the trigger if it may have changed; called with `mu` held. */
static void refresh(void) {
    if (!trigger_path[0]) return;
    long long now = now_ns();
    if (last_check_ns >= 0 && now - last_check_ns < recheck_ns) return;
    last_check_ns = now;
    struct stat st;
    if (stat(trigger_path, &st) != 0) {
        if (trig.armed) {
            memset(&trig, 0, sizeof trig);
            file_ino = 0;
            write_status();
        }
        return;
    }
    if (trig.armed && st.st_ino == file_ino && st.st_size == file_size &&
        st.st_mtim.tv_sec == file_mtime.tv_sec && st.st_mtim.tv_nsec == file_mtime.tv_nsec)
        return;
    char buf[1024];
    int fd = open(trigger_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n < 0) return;
    buf[n] = '\0';
    parse(buf);
    file_ino = st.st_ino;
    file_size = st.st_size;
    file_mtime = st.st_mtim;
    write_status();
}

static double uniform(void) { /* xorshift64*: a fixed sequence per seed, no libc state touched */
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (double)((rng * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

static void injected(void) {
    if (now_ns() - last_status_ns >= 100 * 1000000LL || alloc_failed + launch_failed == 1) write_status();
}

/* The error an allocation call must return instead of being passed on (0: pass it on). */
static int alloc_verdict(int runtime) {
    pthread_mutex_lock(&mu);
    refresh();
    allocs++;
    int code = sticky;
    if (!code && trig.armed && trig.alloc_oom) {
        if (allocs_left > 0) allocs_left--;
        else if (trig.rate >= 1.0 || uniform() < trig.rate) code = OOM;
    }
    if (code) {
        alloc_failed++;
        injected();
    }
    pthread_mutex_unlock(&mu);
    if (code && runtime) pending = code; /* the driver API has no last-error state */
    return code;
}

static int launch_verdict(int runtime) {
    pthread_mutex_lock(&mu);
    refresh();
    launches++;
    int code = sticky;
    if (!code && trig.armed && trig.launch) {
        if (launches_left > 0) launches_left--;
        else code = sticky = trig.launch;
    }
    if (code) {
        launch_failed++;
        injected();
    }
    pthread_mutex_unlock(&mu);
    if (code && runtime) pending = code; /* the driver API has no last-error state */
    return code;
}

static int sticky_code(void) {
    pthread_mutex_lock(&mu);
    int code = sticky;
    pthread_mutex_unlock(&mu);
    return code;
}

static void *resolve(const char *name, const char *const *libs) {
    void *f = dlsym(RTLD_NEXT, name);
    for (; !f && *libs; libs++) {
        void *h = dlopen(*libs, RTLD_LAZY | RTLD_NOLOAD);
        if (h) f = dlsym(h, name);
    }
    return f;
}

#define REAL(ret, name, libs, params)                                    \
    static ret(*real_##name) params;                                     \
    if (!real_##name) real_##name = (ret(*) params)resolve(#name, libs); \
    if (!real_##name) return NOT_INITIALIZED

__attribute__((destructor)) static void shim_unload(void) {
    pthread_mutex_lock(&mu);
    write_status(); /* the last counts, for a process that exits normally */
    pthread_mutex_unlock(&mu);
}

__attribute__((constructor)) static void shim_load(void) {
    const char *path = getenv("INFERCHAOS_CUDA_TRIGGER");
    const char *ms = getenv("INFERCHAOS_CUDA_RECHECK_MS");
    if (ms) recheck_ns = atol(ms) * 1000000L;
    if (!path || !*path || strlen(path) >= sizeof trigger_path) return;
    snprintf(trigger_path, sizeof trigger_path, "%s", path);
    snprintf(status_path, sizeof status_path, "%s.status.%d", path, (int)getpid());
    pthread_mutex_lock(&mu);
    refresh();
    if (!trig.armed) write_status();
    pthread_mutex_unlock(&mu);
}

/* ------------------------------------------------------------------ the runtime API */
cudaError_t cudaMalloc(void **p, size_t n) {
    int code = alloc_verdict(1);
    if (code) return code;
    REAL(cudaError_t, cudaMalloc, RUNTIME_LIBS, (void **, size_t));
    return real_cudaMalloc(p, n);
}

cudaError_t cudaMallocAsync(void **p, size_t n, cudaStream_t s) {
    int code = alloc_verdict(1);
    if (code) return code;
    REAL(cudaError_t, cudaMallocAsync, RUNTIME_LIBS, (void **, size_t, cudaStream_t));
    return real_cudaMallocAsync(p, n, s);
}

cudaError_t cudaMallocManaged(void **p, size_t n, unsigned int flags) {
    int code = alloc_verdict(1);
    if (code) return code;
    REAL(cudaError_t, cudaMallocManaged, RUNTIME_LIBS, (void **, size_t, unsigned int));
    return real_cudaMallocManaged(p, n, flags);
}

cudaError_t cudaFree(void *p) {
    int code = sticky_code();
    if (code) return code;
    REAL(cudaError_t, cudaFree, RUNTIME_LIBS, (void *));
    return real_cudaFree(p);
}

cudaError_t cudaFreeAsync(void *p, cudaStream_t s) {
    int code = sticky_code();
    if (code) return code;
    REAL(cudaError_t, cudaFreeAsync, RUNTIME_LIBS, (void *, cudaStream_t));
    return real_cudaFreeAsync(p, s);
}

cudaError_t cudaLaunchKernel(const void *func, dim3 grid, dim3 block, void **args, size_t shmem, cudaStream_t s) {
    int code = launch_verdict(1);
    if (code) return code;
    REAL(cudaError_t, cudaLaunchKernel, RUNTIME_LIBS, (const void *, dim3, dim3, void **, size_t, cudaStream_t));
    return real_cudaLaunchKernel(func, grid, block, args, shmem, s);
}

cudaError_t cudaLaunchKernel_ptsz(const void *func, dim3 grid, dim3 block, void **args, size_t shmem, cudaStream_t s) {
    int code = launch_verdict(1);
    if (code) return code;
    REAL(cudaError_t, cudaLaunchKernel_ptsz, RUNTIME_LIBS, (const void *, dim3, dim3, void **, size_t, cudaStream_t));
    return real_cudaLaunchKernel_ptsz(func, grid, block, args, shmem, s);
}

/* What nvcc 13's <<<>>> launches call (crt/device_functions.h), not cudaLaunchKernel:
 * found by running a real CUDA program under the shim (tests/native/cuda_app.cu). */
cudaError_t __cudaLaunchKernel(cudaKernel_t k, dim3 grid, dim3 block, void **args, size_t shmem, cudaStream_t s) {
    int code = launch_verdict(1);
    if (code) return code;
    REAL(cudaError_t, __cudaLaunchKernel, RUNTIME_LIBS, (cudaKernel_t, dim3, dim3, void **, size_t, cudaStream_t));
    return real___cudaLaunchKernel(k, grid, block, args, shmem, s);
}

cudaError_t __cudaLaunchKernel_ptsz(cudaKernel_t k, dim3 grid, dim3 block, void **args, size_t shmem,
                                    cudaStream_t s) {
    int code = launch_verdict(1);
    if (code) return code;
    REAL(cudaError_t, __cudaLaunchKernel_ptsz, RUNTIME_LIBS,
         (cudaKernel_t, dim3, dim3, void **, size_t, cudaStream_t));
    return real___cudaLaunchKernel_ptsz(k, grid, block, args, shmem, s);
}

/* Launches with attributes (clusters, programmatic dependencies): CUTLASS's and PyTorch's
 * newer kernels. The config is passed on untouched, so its layout need not be declared. */
cudaError_t cudaLaunchKernelExC(const void *config, const void *func, void **args) {
    int code = launch_verdict(1);
    if (code) return code;
    REAL(cudaError_t, cudaLaunchKernelExC, RUNTIME_LIBS, (const void *, const void *, void **));
    return real_cudaLaunchKernelExC(config, func, args);
}

cudaError_t cudaLaunchKernelExC_ptsz(const void *config, const void *func, void **args) {
    int code = launch_verdict(1);
    if (code) return code;
    REAL(cudaError_t, cudaLaunchKernelExC_ptsz, RUNTIME_LIBS, (const void *, const void *, void **));
    return real_cudaLaunchKernelExC_ptsz(config, func, args);
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t g, cudaStream_t s) {
    int code = launch_verdict(1);
    if (code) return code;
    REAL(cudaError_t, cudaGraphLaunch, RUNTIME_LIBS, (cudaGraphExec_t, cudaStream_t));
    return real_cudaGraphLaunch(g, s);
}

cudaError_t cudaDeviceSynchronize(void) {
    int code = sticky_code();
    if (code) return code;
    REAL(cudaError_t, cudaDeviceSynchronize, RUNTIME_LIBS, (void));
    return real_cudaDeviceSynchronize();
}

cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    int code = sticky_code();
    if (code) return code;
    REAL(cudaError_t, cudaStreamSynchronize, RUNTIME_LIBS, (cudaStream_t));
    return real_cudaStreamSynchronize(s);
}

/* Launches through <<<>>> ignore the launch's return value and ask here instead. */
cudaError_t cudaGetLastError(void) {
    int code = sticky_code();
    if (code) return code;
    if (pending) {
        code = pending;
        pending = 0;
        return code;
    }
    REAL(cudaError_t, cudaGetLastError, RUNTIME_LIBS, (void));
    return real_cudaGetLastError();
}

cudaError_t cudaPeekAtLastError(void) {
    int code = sticky_code();
    if (code) return code;
    if (pending) return pending;
    REAL(cudaError_t, cudaPeekAtLastError, RUNTIME_LIBS, (void));
    return real_cudaPeekAtLastError();
}

/* ------------------------------------------------------------------- the driver API */
CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t n) {
    int code = alloc_verdict(0);
    if (code) return code;
    REAL(CUresult, cuMemAlloc_v2, DRIVER_LIBS, (CUdeviceptr *, size_t));
    return real_cuMemAlloc_v2(p, n);
}

CUresult cuMemAllocAsync(CUdeviceptr *p, size_t n, CUstream s) {
    int code = alloc_verdict(0);
    if (code) return code;
    REAL(CUresult, cuMemAllocAsync, DRIVER_LIBS, (CUdeviceptr *, size_t, CUstream));
    return real_cuMemAllocAsync(p, n, s);
}

CUresult cuMemAllocManaged(CUdeviceptr *p, size_t n, unsigned int flags) {
    int code = alloc_verdict(0);
    if (code) return code;
    REAL(CUresult, cuMemAllocManaged, DRIVER_LIBS, (CUdeviceptr *, size_t, unsigned int));
    return real_cuMemAllocManaged(p, n, flags);
}

CUresult cuMemFree_v2(CUdeviceptr p) {
    int code = sticky_code();
    if (code) return code;
    REAL(CUresult, cuMemFree_v2, DRIVER_LIBS, (CUdeviceptr));
    return real_cuMemFree_v2(p);
}

CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
                        unsigned int by, unsigned int bz, unsigned int shmem, CUstream s, void **params,
                        void **extra) {
    int code = launch_verdict(0);
    if (code) return code;
    REAL(CUresult, cuLaunchKernel, DRIVER_LIBS,
         (CUfunction, unsigned int, unsigned int, unsigned int, unsigned int, unsigned int, unsigned int,
          unsigned int, CUstream, void **, void **));
    return real_cuLaunchKernel(f, gx, gy, gz, bx, by, bz, shmem, s, params, extra);
}

/* Reached only through the dynamic linker: Triton, which dlsym()s it from its own handle
 * of libcuda.so.1, bypasses any LD_PRELOAD shim. */
CUresult cuLaunchKernelEx(const void *config, CUfunction f, void **params, void **extra) {
    int code = launch_verdict(0);
    if (code) return code;
    REAL(CUresult, cuLaunchKernelEx, DRIVER_LIBS, (const void *, CUfunction, void **, void **));
    return real_cuLaunchKernelEx(config, f, params, extra);
}

CUresult cuGraphLaunch(CUgraphExec g, CUstream s) {
    int code = launch_verdict(0);
    if (code) return code;
    REAL(CUresult, cuGraphLaunch, DRIVER_LIBS, (CUgraphExec, CUstream));
    return real_cuGraphLaunch(g, s);
}
