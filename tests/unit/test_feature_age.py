"""The feature store's age of a record: counted from its write on the store's monotonic
clock, so a wall-clock step between a write and a read (NTP, a VM resumed) is not read as
stale features. CI once stepped its clock 13.4 s forward mid-run, and the old
`time.time() - updated_at` failed a healthy spot run on freshness (14.4 s of 5)."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer

from inferchaos.targets.local import featurestore


def ages_around_a_step(monkeypatch: pytest.MonkeyPatch, stated_age_s: float, step_s: float) -> tuple[float, float]:
    """Write a record `stated_age_s` old, read it, step the wall clock by `step_s`, read again."""
    async def go() -> tuple[float, float]:
        async with TestClient(TestServer(featurestore.make_app())) as client:
            put = await client.put("/features/default", json={
                "version": 1, "updated_at": time.time() - stated_age_s, "values": [0.0]})
            assert put.status == 204
            before = (await (await client.get("/features/default")).json())["age_s"]
            real = time.time
            monkeypatch.setattr(featurestore.time, "time", lambda: real() + step_s)
            after = (await (await client.get("/features/default")).json())["age_s"]
            return before, after
    return asyncio.run(go())


@pytest.mark.parametrize("step_s", [13.4, -30.0])
def test_a_wall_clock_step_after_the_write_does_not_change_the_age(monkeypatch, step_s):
    before, after = ages_around_a_step(monkeypatch, 5.0, step_s)
    assert 5.0 <= before < 6.0
    assert before <= after < before + 1.0, (before, after)


def test_the_age_grows_while_nobody_writes(monkeypatch):
    async def go() -> list[float]:
        async with TestClient(TestServer(featurestore.make_app())) as client:
            await client.put("/features/default", json={"version": 1, "updated_at": time.time(), "values": [0.0]})
            ages = []
            for _ in range(2):
                ages.append((await (await client.get("/features/default")).json())["age_s"])
                await asyncio.sleep(0.3)
            return ages
    first, second = asyncio.run(go())
    assert second - first >= 0.25, (first, second)
