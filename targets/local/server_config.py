"""The reference server's command line and settings.

Kept apart from the server so the supervisor's `--server-arg` options, the server's
`--help` and the settings the engine runs with are all read from one place.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from inferchaos.targets.local.batching import BatchConfig


@dataclass(frozen=True)
class ServerConfig:
    port: int
    name: str
    model_store: str
    feature_store: str
    model: str = "mlp"
    vgpu_dir: Path | None = None
    device: int = 0
    weights_bytes: int = 2 * 1024**3
    batch: BatchConfig = BatchConfig()
    token_latency_s: float = 0.005
    shutdown_timeout_s: float = 10.0
    oom: str = "exit"
    feature_timeout_s: float = 0.2
    feature_backoff_s: float = 1.0
    host: str = "127.0.0.1"
    #: the CUDA runtime library each batch calls (none: no CUDA calls at all)
    cudart: Path | None = None


def _at_least(low: float, cast: type = float):
    def parse(text: str):
        value = cast(text)
        if not value >= low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {text}")
        return value
    return parse


positive_int, non_negative = _at_least(1, int), _at_least(0)


def parse_args(argv: list[str] | None = None) -> ServerConfig:
    p = argparse.ArgumentParser(prog="python -m inferchaos.targets.local.server", description="The reference inference server: a stand-in for vLLM/Triton that behaves like them.")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a pod, for its Service)")
    p.add_argument("--name", required=True, help="replica name, sent back in x-inferchaos-replica")
    p.add_argument("--model-store", required=True, help="base URL of the model store")
    p.add_argument("--feature-store", required=True, help="base URL of the feature store")
    p.add_argument("--model", default="mlp")
    p.add_argument("--vgpu-dir", type=Path, help="virtual GPU ledger directory (none: no device memory)")
    p.add_argument("--device", type=int, default=0)
    p.add_argument("--weights-bytes", type=int, default=2 * 1024**3)
    p.add_argument("--batch-bytes-per-item", type=int, default=64 * 1024**2, help="device memory per row")
    p.add_argument("--max-batch-size", type=positive_int, default=8, help="rows per batch")
    p.add_argument("--max-queue-delay-ms", type=non_negative, default=5.0)
    p.add_argument("--batch-latency-ms", type=non_negative, default=20.0)
    p.add_argument("--per-item-latency-ms", type=non_negative, default=2.0, help="per row")
    p.add_argument("--token-latency-ms", type=non_negative, default=5.0)
    p.add_argument("--shutdown-timeout-s", type=non_negative, default=10.0)
    p.add_argument("--oom", choices=("exit", "reject"), default="exit",
                   help="on device out-of-memory: exit (vLLM's engine dies) or reject the batch and stay up")
    p.add_argument("--cudart", type=Path, help="libcudart to call per batch (an allocation, a launch); "
                   "the local cluster passes the suite's stand-in (`python -m inferchaos.ground.native`)")
    p.add_argument("--feature-timeout-ms", type=non_negative, default=200.0,
                   help="per feature read; on timeout the last features are used")
    p.add_argument("--feature-backoff-ms", type=non_negative, default=1000.0,
                   help="after a failed feature read, reuse the last features this long before reading again")
    a = p.parse_args(argv)
    if not 0 < a.port < 65536:
        p.error(f"--port must be 1..65535, got {a.port}")
    return ServerConfig(
        port=a.port, host=a.host, name=a.name, model_store=a.model_store, feature_store=a.feature_store, model=a.model,
        vgpu_dir=a.vgpu_dir, device=a.device, weights_bytes=a.weights_bytes,
        batch=BatchConfig(a.max_batch_size, a.max_queue_delay_ms / 1000, a.batch_latency_ms / 1000,
                          a.per_item_latency_ms / 1000, a.batch_bytes_per_item),
        token_latency_s=a.token_latency_ms / 1000, shutdown_timeout_s=a.shutdown_timeout_s, oom=a.oom,
        feature_timeout_s=a.feature_timeout_ms / 1000, feature_backoff_s=a.feature_backoff_ms / 1000,
        cudart=a.cudart,
    )
