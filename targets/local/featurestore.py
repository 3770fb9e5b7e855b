"""The feature store: the latest feature vector per entity, with its version and time.

The server reads features for every batch and reports their version and age; the
pipeline writes them. Keeping the two apart lets a fault stop the writer (features go
stale while reads still succeed) or slow the reader, which are different failures.

Each read says how old the record is (`age_s`), counted on the store's monotonic clock
from the moment it was written, plus how old the writer said it was then: a wall-clock
step (NTP, a VM resuming) between a write and a read must not read as stale features.
A CI machine stepped its clock 13.4 s forward mid-run, and `now - updated_at` called
fresh features 14 s old.
"""

from __future__ import annotations

import argparse
import json
import time

from aiohttp import web

from inferchaos.targets.local.service import run


def make_app() -> web.Application:
    features: dict[str, dict] = {}
    #: per entity: (age the writer gave the record when it arrived, monotonic arrival time)
    arrived: dict[str, tuple[float, float]] = {}

    async def health(_: web.Request) -> web.Response:
        return web.Response(status=200)

    async def get(request: web.Request) -> web.Response:
        entity = request.match_info["entity"]
        if entity not in features:
            return web.json_response({"error": f"no features for entity {entity!r}"}, status=404)
        age_at_put, at = arrived[entity]
        return web.json_response({**features[entity], "age_s": round(age_at_put + time.monotonic() - at, 6)})

    async def put(request: web.Request) -> web.Response:
        entity = request.match_info["entity"]
        try:
            body = await request.json()
            record = {
                "entity": entity,
                "version": int(body["version"]),
                "updated_at": float(body["updated_at"]),
                "values": [float(v) for v in body["values"]],
            }
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            return web.json_response({"error": f"bad feature record: {exc}"}, status=400)
        features[entity] = record
        arrived[entity] = (max(0.0, time.time() - record["updated_at"]), time.monotonic())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/features/{entity}", get)
    app.router.add_put("/features/{entity}", put)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m inferchaos.targets.local.featurestore")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    run(make_app(), args.port, "featurestore")


if __name__ == "__main__":
    main()
