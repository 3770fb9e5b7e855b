"""GPU out-of-memory: a hog takes device memory until only `leave` is free."""

from inferchaos.faults.spec import REPLICAS, FaultSpec, Param

gpu_oom = FaultSpec(
    "gpu_oom",
    summary="a hog process takes device memory on a replica's GPU until only `leave` is free; the server's next "
            "batch fails like CUDA OOM and it exits (or rejects, with `up --oom reject`)",
    marker="device memory exhausted on a replica",
    blast_radius="the GPUs of `replicas` replicas (count or %, default 1); at least one replica keeps serving",
    effect="device memory held by the hog on each victim's GPU, read back from the device",
    params=(REPLICAS,
            Param("leave", "size", "device memory to leave free: bytes (0, 256MiB, 1.5GB) or a share of capacity (2%)",
                  default="0"),
            Param("ramp_s", "seconds", "seconds over which the pressure grows (0: at once; >0: a leak)", default=0.0),
            Param("device", "count", "which GPU of the pod the hog fills (CUDA device index)", default=0,
                  only="kubernetes")),
)
