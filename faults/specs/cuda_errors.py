"""CUDA errors in the serving process: allocations fail, or launches (the context is lost)."""

from inferchaos.ground.errors import UsageError
from inferchaos.faults.spec import REPLICAS, Args, FaultSpec, Param

#: the errors the shim can return (the executor maps each to the shim's trigger words).
ERRORS = ("oom", "illegal_address", "ecc")


def _check(args: Args) -> None:
    if args.rate < 1 and args.error != "oom":
        raise UsageError("cuda_errors: rate applies to error=oom only (a lost context is not a matter of odds)")


cuda_errors = FaultSpec(
    "cuda_errors",
    summary="the server's own CUDA calls fail (an LD_PRELOAD shim in front of libcudart/libcuda): allocations "
            "return out-of-memory, or launches an illegal address or an ECC error (the context is lost); each "
            "victim is restarted with the shim, inert, before the baseline",
    marker="a replica's own CUDA calls fail (out of memory, illegal address, ECC)",
    blast_radius="the CUDA calls of `replicas` replicas (count or %, default 1), and of any replica started on "
                 "their GPUs while it holds; at least one replica keeps serving",
    effect="a CUDA call in a victim's process returned the error (the shim's own count, for this trigger)",
    params=(REPLICAS,
            Param("error", "choice", "oom: allocations fail; illegal_address, ecc: kernel launches fail",
                  default="oom", choices=ERRORS),
            Param("after", "count", "calls that still succeed in each process before the errors start", default=0),
            Param("rate", "number", "share of allocations that fail (oom only; above 0, at most 1)", default=1.0,
                  above=0.0, at_most=1.0)),
    check=_check,
)
