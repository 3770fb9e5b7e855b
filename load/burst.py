"""A closed-loop asyncio client for quick looks: the demo and the LB benchmark.

Experiments drive load with locust in its own process; this is the small tool for
"send real inference through the LB for a few seconds and say what came back", where
starting locust would cost more than the measurement.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

REPLICA_HEADER = "x-inferchaos-replica"


@dataclass
class BurstResult:
    seconds: float
    ok: int = 0
    errors: Counter = field(default_factory=Counter)
    replicas: Counter = field(default_factory=Counter)
    outputs: set = field(default_factory=set)
    latencies_s: list[float] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.ok + sum(self.errors.values())

    @property
    def rps(self) -> float:
        return self.total / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        if not self.latencies_s:
            return float("nan")
        xs = sorted(self.latencies_s)
        return xs[min(len(xs) - 1, int(q / 100 * len(xs)))] * 1000


def infer_body(row: list[float]) -> dict:
    return {"inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP32", "data": row}]}


async def _worker(session: aiohttp.ClientSession, url: str, body: dict, until: float, res: BurstResult) -> None:
    while time.monotonic() < until:
        t0 = time.monotonic()
        try:
            async with session.post(url, json=body) as resp:
                payload = await resp.json(content_type=None)
                if resp.status == 200 and "outputs" in payload:
                    res.ok += 1
                    res.outputs.add(tuple(payload["outputs"][0]["data"]))
                    res.replicas[resp.headers.get(REPLICA_HEADER, "?")] += 1
                else:
                    res.errors[f"HTTP {resp.status}"] += 1
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            res.errors[type(exc).__name__] += 1
        res.latencies_s.append(time.monotonic() - t0)


async def _burst(base_url: str, model: str, seconds: float, concurrency: int, row: list[float]) -> BurstResult:
    url = f"{base_url}/v2/models/{model}/infer"
    res = BurstResult(seconds)
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=30)) as session:
        start = time.monotonic()
        await asyncio.gather(*(_worker(session, url, infer_body(row), start + seconds, res) for _ in range(concurrency)))
        res.seconds = time.monotonic() - start
    return res


def burst(base_url: str, model: str = "mlp", seconds: float = 5.0, concurrency: int = 8,
          row: list[float] | None = None) -> BurstResult:
    """Send the same inference request from `concurrency` loops for `seconds`."""
    return asyncio.run(_burst(base_url, model, seconds, concurrency, row or [0.1 * i for i in range(16)]))
