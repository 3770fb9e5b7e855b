"""Shared start-up for the small aiohttp services of the local cluster.

Each service is its own process (so a fault can stop or slow one without touching the
others) and must die cleanly on SIGTERM/SIGINT; this is the one place that arranges it.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from aiohttp import web


async def serve(app: web.Application, port: int, name: str) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    print(f"{name}: listening on 127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print(f"{name}: stopping", flush=True)
    await runner.cleanup()


def run(app: web.Application, port: int, name: str) -> None:
    try:
        asyncio.run(serve(app, port, name))
    except OSError as exc:  # port taken between allocation and bind
        print(f"{name}: cannot listen on 127.0.0.1:{port}: {exc.strerror}", file=sys.stderr, flush=True)
        sys.exit(2)
