"""An aiohttp app on a free loopback port, served from a thread of the test process, so a
sync test can point real clients (locust, httpx) at a server that misbehaves on purpose."""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web


class ThreadedApp:
    """Subclasses add their handlers in `routes(app)` (called on the server's loop, so
    asyncio objects made there belong to it); `url` is set once the port is bound."""

    shutdown_timeout_s = 60.0

    def __init__(self) -> None:
        self.url = ""
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=self.shutdown_timeout_s)
        self.loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        self._ready.set()
        self.loop.run_forever()

    def before_stop(self) -> None:
        """Called on the test's thread before the server shuts down (release what waits)."""

    def __enter__(self):  # noqa: ANN204 - the subclass
        self._thread.start()
        assert self._ready.wait(10), "the test server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.before_stop()
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
