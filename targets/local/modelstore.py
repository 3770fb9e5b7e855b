"""The model store: serves model weights over HTTP, as an object store or a model registry would.

Replicas fetch their weights from here at start, so a slow or stalled store (the
model-load-stall fault sits between the two) turns directly into a late cold start.
Weights are generated from the model name once and kept in memory.
"""

from __future__ import annotations

import argparse
import hashlib

from aiohttp import web

from inferchaos.targets.local import model as reference_model
from inferchaos.targets.local.service import run

CHUNK = 64 * 1024


def make_app() -> web.Application:
    cache: dict[str, bytes] = {}

    def blob(name: str) -> bytes:
        if name not in cache:
            cache[name] = reference_model.weights_to_bytes(reference_model.generate_weights(name))
        return cache[name]

    async def health(_: web.Request) -> web.Response:
        return web.Response(status=200)

    async def manifest(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        data = blob(name)
        return web.json_response(
            {"name": name, "version": "1", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        )

    async def weights(request: web.Request) -> web.StreamResponse:
        # Streamed in chunks so that a bandwidth-limited path in front of us slows the
        # reader the way a large checkpoint download would.
        data = blob(request.match_info["name"])
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = len(data)
        await resp.prepare(request)
        for i in range(0, len(data), CHUNK):
            await resp.write(data[i : i + CHUNK])
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/models/{name}", manifest)
    app.router.add_get("/models/{name}/weights", weights)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m inferchaos.targets.local.modelstore")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    run(make_app(), args.port, "modelstore")


if __name__ == "__main__":
    main()
