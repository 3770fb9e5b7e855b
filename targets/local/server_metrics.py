"""The reference server's Prometheus metrics, named as vLLM and Triton name theirs.

Fleets alert on these exact names, so the suite's probes and SLOs read them from our
stand-in as they would from a real engine; that is why the names carry `vllm:` and
`nv_` prefixes rather than our own. Each server owns a `CollectorRegistry` of its own
(never the process-global one) so tests and embedding code can build several without
"duplicated timeseries" errors, and so `/metrics` shows only what the engine reports.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: vLLM's own bucket edges for time to first token and request latencies (seconds).
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass(frozen=True)
class DeviceMemory:
    """What the (virtual) GPU holds right now, for the memory gauges."""

    used: int = 0
    total: int = 0

    @property
    def fraction(self) -> float:
        return self.used / self.total if self.total > 0 else 0.0


class ServerMetrics:
    """All metric objects of one server, pre-labelled with its model and device."""

    def __init__(self, model_name: str, gpu_uuid: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        vllm = ["model_name"]
        self._running = Gauge("vllm:num_requests_running", "Requests in a running batch or decoding.", vllm, registry=r)
        self._waiting = Gauge("vllm:num_requests_waiting", "Requests queued for the batcher.", vllm, registry=r)
        self._kv = Gauge("vllm:kv_cache_usage_perc", "Fraction of device memory in use (0..1).", vllm, registry=r)
        self._ttft = Histogram(
            "vllm:time_to_first_token_seconds", "Arrival to first token.", vllm, buckets=TTFT_BUCKETS, registry=r
        )
        self._e2e = Histogram(
            "vllm:e2e_request_latency_seconds", "Arrival to last byte.", vllm, buckets=LATENCY_BUCKETS, registry=r
        )
        self._queue = Histogram(
            "vllm:request_queue_time_seconds", "Time waiting for a batch.", vllm, buckets=LATENCY_BUCKETS, registry=r
        )
        nv = ["model", "version"]
        self._pending = Gauge("nv_inference_pending_request_count", "Requests queued for execution.", nv, registry=r)
        # prometheus-client exposes counters as `<name>_total`; Triton's own name has no
        # suffix, so probes should match the prefix `nv_inference_queue_duration_us`.
        self._queue_us = Counter("nv_inference_queue_duration_us", "Cumulative queue time (us).", nv, registry=r)
        gpu = ["gpu_uuid"]
        self._mem_used = Gauge("nv_gpu_memory_used_bytes", "Device memory used.", gpu, registry=r)
        self._mem_total = Gauge("nv_gpu_memory_total_bytes", "Device memory capacity.", gpu, registry=r)

        self.running = self._running.labels(model_name=model_name)
        self.waiting = self._waiting.labels(model_name=model_name)
        self.kv_cache = self._kv.labels(model_name=model_name)
        self.ttft = self._ttft.labels(model_name=model_name)
        self.e2e = self._e2e.labels(model_name=model_name)
        self.queue_time = self._queue.labels(model_name=model_name)
        self.pending = self._pending.labels(model=model_name, version="1")
        self.queue_us = self._queue_us.labels(model=model_name, version="1")
        self.mem_used = self._mem_used.labels(gpu_uuid=gpu_uuid)
        self.mem_total = self._mem_total.labels(gpu_uuid=gpu_uuid)

    def observe_queue(self, seconds: float) -> None:
        self.queue_time.observe(seconds)
        self.queue_us.inc(seconds * 1e6)

    def set_load(self, running: int, waiting: int) -> None:
        self.running.set(running)
        self.waiting.set(waiting)
        self.pending.set(waiting)

    def set_memory(self, mem: DeviceMemory) -> None:
        self.kv_cache.set(mem.fraction)
        self.mem_used.set(mem.used)
        self.mem_total.set(mem.total)

    def render(self) -> bytes:
        return generate_latest(self.registry)
