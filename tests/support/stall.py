"""A tiny inference server that can be slow or hang mid-stream, for the load generator's tests."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from tests.support.aioapp import ThreadedApp

ANSWER = json.dumps({"outputs": [{"name": "p", "shape": [1, 8], "datatype": "FP32", "data": [0.125] * 8}]}).encode()


def chunk(text: str) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "text": text}]}).encode() + b"\n\n"


class StallServer(ThreadedApp):
    """Answers infer after `delay_s`; streams one token, then (stall) nothing until released."""

    shutdown_timeout_s = 0.1

    def __init__(self, delay_s: float = 0.0, stall: bool = False) -> None:
        super().__init__()
        self.delay_s, self.stall = delay_s, stall
        self.arrived = 0
        self.release: asyncio.Event | None = None

    async def infer(self, request: web.Request) -> web.Response:
        await request.read()
        self.arrived += 1
        await asyncio.sleep(self.delay_s)
        return web.Response(body=ANSWER, content_type="application/json")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.arrived += 1
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(chunk("alpha"))
        await resp.write(chunk(" bravo"))
        if self.stall:
            assert self.release is not None
            await self.release.wait()
        await resp.write(chunk(" charlie"))
        await resp.write(b"data: [DONE]\n\n")
        return resp

    def routes(self, app: web.Application) -> None:
        self.release = asyncio.Event()
        app.router.add_post("/v2/models/{name}/infer", self.infer)
        app.router.add_post("/v1/completions", self.completions)

    def before_stop(self) -> None:
        self.loop.call_soon_threadsafe(self.release.set)
