"""The dynamic batcher: the reference server's one serial "GPU".

Real engines (Triton's dynamic batcher, vLLM's scheduler) hold requests briefly to fill a
batch, then run one batch at a time on the device. Faults act through exactly that:
a slow device lengthens every queue behind it, a device with no memory left fails the
whole batch. So the batcher queues, allocates device memory per batch, and sleeps for
the simulated GPU time, and the queue/run times it measures are what the metrics show.

One *item* is one request (all of its rows); batch limits and costs are counted in rows,
and an item is never split, so a request larger than `max_batch_size` runs alone. Each
item's rows are computed with `Model.forward` on their own (not on the stacked batch):
BLAS may round a row differently depending on what it is stacked with, and outputs must
be bit-identical whatever batch a request landed in.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import numpy as np

from inferchaos.targets.local.cuda import CudaError, CudaRuntime
from inferchaos.targets.local.model import Model
from inferchaos.targets.local.vgpu import DeviceOutOfMemory, VirtualDevice

MIB = 1024**2


class EngineUnavailable(Exception):
    """The batcher will not run this item (dead engine, shutdown abort); the text says why."""


@dataclass(frozen=True)
class BatchConfig:
    max_batch_size: int = 8  # rows per batch
    max_queue_delay_s: float = 0.005
    batch_latency_s: float = 0.020
    per_item_latency_s: float = 0.002  # per row
    batch_bytes_per_item: int = 64 * MIB  # per row


@dataclass(frozen=True)
class ItemResult:
    outputs: np.ndarray
    queue_s: float
    run_s: float
    #: Whatever `before_batch` returned for the batch this item ran in (the features).
    context: Any = None


@dataclass(eq=False)
class _Item:
    rows: np.ndarray
    future: asyncio.Future[ItemResult]
    enqueued: float = field(default_factory=time.monotonic)

    @property
    def n(self) -> int:
        return int(self.rows.shape[0])


class Batcher:
    """Collects items, runs them one batch at a time, resolves each item's future.

    `before_batch` runs at the start of every batch (the server fetches features there);
    `on_oom` is told when a batch's allocation failed, after that batch's items were
    failed, so the server can decide between dying and rejecting; `on_fatal` when a CUDA
    call failed in a way no process survives (an illegal address, an ECC error).
    """

    def __init__(
        self,
        model: Model,
        config: BatchConfig,
        device: VirtualDevice | None = None,
        before_batch: Callable[[], Awaitable[Any]] | None = None,
        on_oom: Callable[[DeviceOutOfMemory | CudaError], None] | None = None,
        on_queue_time: Callable[[float], None] | None = None,
        cuda: CudaRuntime | None = None,
        on_fatal: Callable[[CudaError], None] | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.device = device
        self._before_batch = before_batch
        self._on_oom = on_oom
        self._on_queue_time = on_queue_time
        self.cuda = cuda
        self._on_fatal = on_fatal
        self._pending: deque[_Item] = deque()
        self._running: list[_Item] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed: EngineUnavailable | None = None
        self._seq = itertools.count(1)

    # ----------------------------------------------------------------- public
    @property
    def waiting(self) -> int:
        return sum(1 for i in self._pending if not i.future.done())

    @property
    def running(self) -> int:
        return sum(1 for i in self._running if not i.future.done())

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="batcher")

    async def submit(self, rows: np.ndarray) -> ItemResult:
        """Queue `rows` ([n, INPUT_DIM]) and wait for their outputs.

        Raises `DeviceOutOfMemory` when the batch did not fit on the device, and
        `EngineUnavailable` when the batcher was closed before or while it ran.
        """
        if self._closed is not None:
            raise self._closed
        item = _Item(np.asarray(rows, dtype=np.float32), asyncio.get_running_loop().create_future())
        self._pending.append(item)
        self._wakeup.set()
        return await item.future

    async def close(self, reason: str) -> None:
        """Stop for good: fail everything queued or running with `reason`."""
        if self._closed is None:
            self._closed = EngineUnavailable(reason)
        running = list(self._running)  # the loop clears its own list when cancelled
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for item in [*running, *self._pending]:
            if not item.future.done():
                item.future.set_exception(self._closed)
        self._pending.clear()
        self._running = []

    @staticmethod
    def _fail(batch: list[_Item], exc: Exception) -> None:
        for item in batch:
            if not item.future.done():
                item.future.set_exception(exc)

    # ---------------------------------------------------------------- the loop
    async def _loop(self) -> None:
        while True:
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._fill(self._pending[0].enqueued + self.config.max_queue_delay_s)
            batch = self._take()
            if batch:
                await self._run(batch)

    async def _fill(self, deadline: float) -> None:
        """Wait for more items until the batch is full or the first item waited long enough."""
        while self._queued_rows() < self.config.max_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _queued_rows(self) -> int:
        return sum(i.n for i in self._pending if not i.future.done())

    def _take(self) -> list[_Item]:
        batch: list[_Item] = []
        rows = 0
        while self._pending:
            item = self._pending[0]
            if item.future.done():  # its caller gave up
                self._pending.popleft()
                continue
            if batch and rows + item.n > self.config.max_batch_size:
                break
            batch.append(self._pending.popleft())
            rows += item.n
        return batch

    async def _run(self, batch: list[_Item]) -> None:
        cfg = self.config
        rows = sum(i.n for i in batch)
        tag = f"batch-{next(self._seq)}"
        started = time.monotonic()
        self._running = batch
        allocated, ptr = False, None
        try:
            if self.device is not None:
                try:
                    await asyncio.to_thread(self.device.allocate, rows * cfg.batch_bytes_per_item, tag)
                    allocated = True
                except DeviceOutOfMemory as exc:
                    for item in batch:
                        if not item.future.done():
                            item.future.set_exception(exc)
                    if self._on_oom is not None:
                        self._on_oom(exc)
                    return
            if self.cuda is not None:
                try:  # where a real engine's allocator and kernels call CUDA
                    ptr = self.cuda.malloc(rows * cfg.batch_bytes_per_item)
                    self.cuda.launch()
                except CudaError as exc:
                    self._fail(batch, exc)
                    callback = self._on_oom if exc.out_of_memory else self._on_fatal
                    if callback is not None:
                        callback(exc)
                    return
            for item in batch:
                if self._on_queue_time is not None:
                    self._on_queue_time(started - item.enqueued)
            context = await self._before_batch() if self._before_batch is not None else None
            outputs = [self.model.forward(item.rows) for item in batch]
            await asyncio.sleep(cfg.batch_latency_s + rows * cfg.per_item_latency_s)
            run_s = time.monotonic() - started
            for item, out in zip(batch, outputs):
                if not item.future.done():
                    item.future.set_result(ItemResult(out, started - item.enqueued, run_s, context))
        finally:
            if allocated and self.device is not None:
                self.device.free(tag)
            if ptr is not None and self.cuda is not None:
                try:
                    self.cuda.free(ptr)
                except CudaError:
                    pass  # a lost context fails every call; the launch already said so
            self._running = [] if self._running is batch else self._running
