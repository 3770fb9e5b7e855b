"""The feature pipeline: publishes a new feature version every interval.

It is a process of its own so that the data-pipeline-lag fault can stop it (SIGSTOP or
kill) and the features served go stale while everything else stays up.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time

import httpx

FEATURE_DIM = 8


def values_for(version: int) -> list[float]:
    return [round(math.sin(version * 0.1 + i), 6) for i in range(FEATURE_DIM)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m inferchaos.targets.local.pipeline")
    parser.add_argument("--feature-store", required=True, help="base URL of the feature store")
    parser.add_argument("--interval-s", type=float, default=1.0)
    parser.add_argument("--entities", default="default", help="comma-separated entity names")
    args = parser.parse_args(argv)
    entities = [e for e in args.entities.split(",") if e]

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"pipeline: publishing {entities} every {args.interval_s}s", flush=True)
    version = 0
    next_at = time.monotonic()
    with httpx.Client(base_url=args.feature_store, timeout=2.0) as client:
        while not stopping:
            version += 1
            for entity in entities:
                try:
                    client.put(
                        f"/features/{entity}",
                        json={"version": version, "updated_at": time.time(), "values": values_for(version)},
                    )
                except httpx.HTTPError as exc:
                    print(f"pipeline: publish v{version} failed: {exc!r}", file=sys.stderr, flush=True)
            next_at += args.interval_s
            while not stopping and time.monotonic() < next_at:
                time.sleep(min(0.1, max(0.0, next_at - time.monotonic())))
    print("pipeline: stopped", flush=True)


if __name__ == "__main__":
    main()
