// A real CUDA program (nvcc, the runtime's own headers, a real kernel launched with <<<>>>),
// linked against the real shared libcudart: the closest this suite gets to PyTorch without
// a GPU. Line-driven like cuda_client.c; prints one result a line.
//   malloc N | launch (the kernel, then cudaGetLastError) | text CODE (the runtime's wording)
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cuda_runtime.h>

__global__ void touch(int *p) { if (p) *p = 1; }

int main() {
    char line[256], cmd[64], arg[128];
    setvbuf(stdout, NULL, _IOLBF, 0);
    while (fgets(line, sizeof line, stdin)) {
        arg[0] = '\0';
        if (sscanf(line, "%63s %127s", cmd, arg) < 1) continue;
        if (!strcmp(cmd, "malloc")) {
            void *p = NULL;
            printf("%d\n", (int)cudaMalloc(&p, (size_t)strtoull(arg, NULL, 10)));
        } else if (!strcmp(cmd, "launch")) {
            touch<<<1, 1>>>(NULL);
            printf("%d\n", (int)cudaGetLastError());
        } else if (!strcmp(cmd, "text")) {
            printf("%s\n", cudaGetErrorString((cudaError_t)atoi(arg)));
        } else {
            printf("unknown %s\n", cmd);
        }
    }
    return 0;
}
